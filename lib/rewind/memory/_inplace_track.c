/*
 * Write tracking: the worker registers its memory with a userfaultfd in WP_ASYNC mode
 * and confines itself (track_self, in the worker); the snapshot process write-protects
 * with PAGEMAP_SCAN, asks it which pages were written, and copies those back from the
 * backup (process_vm_writev). track_probe checks that all of it works here.
 */
#include "_inplace.h"

static int open_uffd(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && (errno == EPERM || errno == EACCES))
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
    };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!(api.features & UFFD_FEATURE_WP_ASYNC)) {
        close(fd);
        return -ENOTSUP;
    }
    return fd;
}

static int register_all(int uffd, pid_t self) {
    char path[64], *buf;
    snprintf(path, sizeof path, "/proc/%d/maps", (int)self);
    buf = malloc(MAPS_BUF);
    if (!buf)
        return -ENOMEM;
    size_t len;
    int rc = read_file_into(path, buf, MAPS_BUF, &len);
    const char *p = buf, *end = buf + (rc == 0 ? len : 0);
    while (rc == 0 && p < end) {
        uintptr_t s = (uintptr_t)hex_at(&p);
        p++;
        uintptr_t e = (uintptr_t)hex_at(&p);
        p++;
        int priv = p[3] == 'p';
        const char *line = p;
        while (p < end && *p != '\n')
            p++;
        int special = memmem(line, (size_t)(p - line), " [v", 3) != NULL;
        if (p < end)
            p++;
        if (!priv || special)
            continue;
        struct uffdio_register reg = {
            .range = {.start = s, .len = e - s},
            .mode = UFFDIO_REGISTER_MODE_WP,
        };
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
            rc = -errno;
    }
    free(buf);
    return rc;
}

/* Write-protect every written page of [start, end) in one walk; -errno on failure. */
int protect(struct ckpt *c, uintptr_t start, uintptr_t end) {
    struct rw_pm_scan_arg arg = {
        .size = sizeof arg,
        .flags = RW_PM_SCAN_WP_MATCHING | RW_PM_SCAN_CHECK_WPASYNC,
        .start = start,
        .end = end,
        .category_mask = RW_PAGE_IS_WRITTEN,
        .return_mask = RW_PAGE_IS_WRITTEN,
    };
    return ioctl(c->pagemap_fd, RW_PAGEMAP_SCAN, &arg) < 0 ? -errno : 0;
}

/* Forbid the worker what would let it hide writes from the rewind: PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING re-protects pages it wrote, UFFDIO_WRITEPROTECT likewise, and x32
 * system calls would get around the check of the ioctl number. Also what a request could
 * leave behind that cannot be seen from outside: a Landlock domain (landlock_restrict_self),
 * which would restrict and signal to every later request; syscall user dispatch
 * (PR_SET_SYSCALL_USER_DISPATCH), which would turn the rewinder's injected calls into
 * SIGSYS in the worker's own code; and the settings of DENIED_PRCTL and CPUID faulting,
 * which no function needs: refused, they need no injected getter after every request. */
/* prctl options refused to the worker (argument 0): settings no function needs that
 * could only be read back by injecting a getter after every request. */
static const uint32_t DENIED_PRCTL[] = {
    59, /* PR_SET_SYSCALL_USER_DISPATCH */
    26, /* PR_SET_TSC */
    33, /* PR_MCE_KILL */
    57, /* PR_SET_IO_FLUSHER */
    65, /* PR_SET_MDWE */
    78, /* PR_FUTEX_HASH */
    28, /* PR_SET_SECUREBITS */
    8,  /* PR_SET_KEEPCAPS */
};
#define NDENIED ((int)(sizeof DENIED_PRCTL / sizeof DENIED_PRCTL[0]))
#define RW_ARCH_SET_CPUID_ 0x1012

static int confine(void) {
    struct sock_filter f[32];
    int n = 0, deny, allow;
    /* Jumps to DENY/ALLOW are patched once their places are known: jt/jf hold -1 (deny)
     * or -2 (allow) until then. */
#define J(op, k, jt, jf) (f[n++] = (struct sock_filter)BPF_JUMP(op, k, jt, jf))
#define S(op, k) (f[n++] = (struct sock_filter)BPF_STMT(op, k))
    S(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    J(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    S(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    S(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    J(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0xff, 0); /* x32 */
    J(BPF_JMP | BPF_JEQ | BPF_K, SYS_landlock_restrict_self, 0xff, 0);
    J(BPF_JMP | BPF_JEQ | BPF_K, SYS_arch_prctl, 0, 2);
    S(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    J(BPF_JMP | BPF_JEQ | BPF_K, RW_ARCH_SET_CPUID_, 0xff, 0xfe);
    J(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, (unsigned char)(NDENIED + 1));
    S(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    for (int i = 0; i < NDENIED; i++)
        J(BPF_JMP | BPF_JEQ | BPF_K, DENIED_PRCTL[i], 0xff, i == NDENIED - 1 ? 0xfe : 0);
    J(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 0xfe);
    S(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]));
    J(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)RW_PAGEMAP_SCAN, 0xff, 0);
    J(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)UFFDIO_WRITEPROTECT, 0xff, 0);
    J(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)UFFDIO_UNREGISTER, 0xff, 0xfe);
    deny = n;
    S(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    allow = n;
    S(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#undef J
#undef S
    for (int i = 0; i < n; i++) {
        if (BPF_CLASS(f[i].code) != BPF_JMP)
            continue;
        if (f[i].jt == 0xff || f[i].jt == 0xfe)
            f[i].jt = (unsigned char)((f[i].jt == 0xff ? deny : allow) - i - 1);
        if (f[i].jf == 0xff || f[i].jf == 0xfe)
            f[i].jf = (unsigned char)((f[i].jf == 0xff ? deny : allow) - i - 1);
    }
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0 ? -errno : 0;
}

/* ---- the snapshot process side ------------------------------------------------------ */

/* Collect the pages to restore into c->found: in writable units, written or dropped
 * ones (every page there was made present at the checkpoint); in read-only units,
 * written ones only, which check_found refuses. -EPERM when a mapping lost its
 * registration (it was unmapped and mapped again in the same place). */
static int scan_units(struct ckpt *c, int writable) {
    c->nfound = 0;
    for (int u = 0; u < c->nunits; u++) {
        if (c->units[u].writable != writable)
            continue;
        uintptr_t pos = c->units[u].start, end = c->units[u].end;
        while (pos < end) {
            struct rw_pm_scan_arg arg = {
                .size = sizeof arg,
                .flags = RW_PM_SCAN_CHECK_WPASYNC,
                .start = pos,
                .end = end,
                .vec = (uintptr_t)c->vec,
                .vec_len = SCAN_VEC,
                .category_inverted = RW_PAGE_IS_PRESENT,
                .category_mask = RW_PAGE_IS_WPALLOWED,
                .category_anyof_mask = RW_PAGE_IS_WRITTEN | RW_PAGE_IS_PRESENT,
                .return_mask = RW_PAGE_IS_WRITTEN | RW_PAGE_IS_PRESENT,
            };
            if (!c->units[u].writable) {
                arg.category_inverted = 0;
                arg.category_anyof_mask = 0;
                arg.category_mask = RW_PAGE_IS_WPALLOWED | RW_PAGE_IS_WRITTEN;
                arg.return_mask = RW_PAGE_IS_WRITTEN;
            }
            long got = ioctl(c->pagemap_fd, RW_PAGEMAP_SCAN, &arg);
            if (got < 0)
                return -errno;
            for (long i = 0; i < got; i++) {
                if (c->nfound >= MAX_RANGES)
                    return -E2BIG;
                c->found[c->nfound].start = c->vec[i].start;
                c->found[c->nfound].end = c->vec[i].end;
                c->found[c->nfound].categories = c->vec[i].categories;
                c->found[c->nfound++].unit = u;
            }
            if (got < SCAN_VEC)
                break; /* the output buffer is not full: the walk is complete */
            pos = c->vec[got - 1].end;
        }
    }
    return 0;
}

/* After the read-only scan: any written page there means code or RELRO was patched,
 * and there is no backup of it. */
const char *check_found(struct ckpt *c) {
    return c->nfound ? "read-only memory (code or RELRO) was written" : NULL;
}

static int flush_iov(struct ckpt *c, struct iovec *local, struct iovec *remote, int n) {
    size_t want = 0;
    for (int i = 0; i < n; i++)
        want += remote[i].iov_len;
    ssize_t got =
        n ? process_vm_writev(c->pid, local, (unsigned long)n, remote, (unsigned long)n, 0) : 0;
    return got == (ssize_t)want ? 0 : -EIO;
}

/* Copy back written and dropped pages (one process_vm_writev per 1,024 ranges), then,
 * when there are many, write-protect them again: copy first, or the copy would mark
 * them written. */
const char *restore_memory(struct ckpt *c) {
    struct iovec *local = c->iov_local, *remote = c->iov_remote;
    int n = 0;
    for (int i = 0; i < c->nfound; i++) {
        struct range *f = &c->found[i];
        for (uintptr_t a = f->start; a < f->end;) {
            int k = find_region(c->regions, c->nregions, a);
            if (k < 0)
                return "a found page left the checkpoint's mappings";
            const struct region *r = &c->regions[k];
            uintptr_t stop = r->end < f->end ? r->end : f->end;
            local[n].iov_base = c->backup + r->backup + (a - r->start);
            local[n].iov_len = stop - a;
            remote[n].iov_base = (void *)a;
            remote[n].iov_len = stop - a;
            c->pages += (stop - a) / (uintptr_t)page_size;
            if (++n == IOV_BATCH) {
                if (flush_iov(c, local, remote, n) < 0)
                    return "writing the worker's memory failed";
                n = 0;
            }
            a = stop;
        }
        c->ranges++;
    }
    if (flush_iov(c, local, remote, n) < 0)
        return "writing the worker's memory failed";
    /* An unprotected page is reported written at every scan, so it is copied back after
     * every request: leaving the pages requests write unprotected keeps their write
     * faults off the next request, at the price of copying them every time. */
    if (c->pages <= HOT_LIMIT_PAGES)
        return NULL;
    /* One protecting walk per unit that had pages restored. */
    for (int i = 0; i < c->nfound; i++) {
        if (i > 0 && c->found[i].unit == c->found[i - 1].unit)
            continue;
        const struct unit *u = &c->units[c->found[i].unit];
        if (protect(c, u->start, u->end) < 0)
            return "write-protecting restored pages failed";
    }
    return NULL;
}

const char *scan_or_refuse(struct ckpt *c, int writable) {
    int rc = scan_units(c, writable);
    if (rc == -EPERM)
        return "a tracked mapping was replaced";
    return rc < 0 ? "PAGEMAP_SCAN failed" : NULL;
}

/* The probe's child: track a small mapping, write one page, report, wait to be killed. */
static void probe_child(char *mem, long ps, int report) {
    int err = 0;
    int fd = open_uffd();
    if (fd < 0)
        err = -fd;
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)mem, .len = (uint64_t)ps * 4},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)mem, .len = (uint64_t)ps * 4},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (!err && (ioctl(fd, UFFDIO_REGISTER, &reg) < 0 || ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0))
        err = errno;
    mem[ps * 2] = 2;
    ssize_t w = write(report, &err, sizeof err);
    (void)w;
    for (;;)
        pause(); /* until killed */
}

/* Whether in-place rewind works here: NULL, or the step that failed and *err. */
const char *track_probe(int *err_out) {
    long ps = sysconf(_SC_PAGESIZE);
    char *mem =
        mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return *err_out = errno, "mmap";
    memset(mem, 1, (size_t)ps * 4);
    const char *why = NULL;
    int err = 0;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        *err_out = errno;
        munmap(mem, (size_t)ps * 4);
        return "pipe";
    }
    /* A child tracks its memory and writes one page; this process finds that page
     * through the child's pagemap after seizing it: the calls a rewind makes. */
    pid_t pid = fork();
    if (pid == 0)
        probe_child(mem, ps, pipefd[1]);
    close(pipefd[1]);
    int child_err = 0;
    if (pid < 0) {
        why = "fork";
        err = errno;
    } else if (read(pipefd[0], &child_err, sizeof child_err) != sizeof child_err) {
        why = "the probe child";
        err = EIO;
    } else if (child_err) {
        why = "userfaultfd in UFFD_FEATURE_WP_ASYNC mode";
        err = child_err;
    } else if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) {
        why = "ptrace(PTRACE_SEIZE) of a child";
        err = errno;
    } else {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/pagemap", (int)pid);
        int pm = open(path, O_RDONLY | O_CLOEXEC);
        struct rw_page_region vec[4];
        struct rw_pm_scan_arg arg = {
            .size = sizeof arg,
            .flags = RW_PM_SCAN_CHECK_WPASYNC,
            .start = (uintptr_t)mem,
            .end = (uintptr_t)mem + (uint64_t)ps * 4,
            .vec = (uintptr_t)vec,
            .vec_len = 4,
            .category_mask = RW_PAGE_IS_WPALLOWED | RW_PAGE_IS_WRITTEN,
            .return_mask = RW_PAGE_IS_WRITTEN,
        };
        long got = pm < 0 ? -1 : ioctl(pm, RW_PAGEMAP_SCAN, &arg);
        if (got < 0) {
            why = pm < 0 ? "opening a child's pagemap" : "PAGEMAP_SCAN";
            err = errno;
        } else if (got != 1 || vec[0].start != (uintptr_t)mem + (uint64_t)ps * 2) {
            why = "PAGEMAP_SCAN did not report exactly the written page";
            err = EIO;
        }
        if (pm >= 0)
            close(pm);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, __WALL);
    }
    close(pipefd[0]);
    munmap(mem, (size_t)ps * 4);
    *err_out = err;
    return why;
}

/* In the worker, before its first request: register every private mapping with a
 * userfaultfd in WP_ASYNC mode and confine the worker (seccomp). The userfaultfd, or
 * -errno and *what. */
int track_self(const char **what) {
    int fd = open_uffd();
    if (fd < 0)
        return *what = "userfaultfd", fd;
    int rc = register_all(fd, getpid());
    if (rc < 0) {
        close(fd);
        return *what = "UFFDIO_REGISTER", rc;
    }
    if ((rc = confine()) < 0) {
        close(fd);
        return *what = "installing the seccomp filter (PR_SET_SECCOMP)", rc;
    }
    return fd;
}
