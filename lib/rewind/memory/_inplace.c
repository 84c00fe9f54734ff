/*
 * rewind.memory._inplace: rewind a request process in place, from outside it.
 *
 * The request process (the worker) runs action code, so nothing inside it is trusted
 * once a request has started: the rewind is done by its parent, the snapshot process,
 * which never runs action code, through ptrace, /proc/PID/mem and PAGEMAP_SCAN.
 *
 * Worker side, before its first request (trusted code):
 *   track()  registers every private mapping with a userfaultfd in WP_ASYNC mode, so
 *            the kernel records which pages are written from then on.
 * Snapshot-process side:
 *   capture(pid, gate_fd)  seizes the worker while it is blocked reading its gate pipe
 *            (the checkpoint), saves its registers, descriptors, signal dispositions,
 *            mask, umask, cwd, brk and mapping list, copies its writable memory into a
 *            backup, write-protects everything and lets it go.
 *   stop(pid)   after a request: stops the worker, refuses a worker with threads, kills
 *            its children. Done before the reply, so nothing of the request runs on.
 *   rewind()    after the reply: checks the worker against the checkpoint (first what
 *            no rewind may put back, such as a new seccomp filter, before anything is
 *            injected), puts per-process kernel state back (rlimits, scheduling, prctl
 *            flags, timers...: "per-process kernel state" below), makes the
 *            kernel-side state equal again by injecting system calls (munmap of new
 *            mappings, brk, close, rt_sigaction, rt_sigprocmask, umask, wait4) and reads
 *            their effect back from /proc, copies
 *            the written pages back through /proc/PID/mem, re-protects them, puts the
 *            registers back so the worker re-enters its gate read, and detaches.
 *   Anything a rewind cannot put back exactly (threads, a replaced or re-protected
 *   checkpoint mapping, a write to code or RELRO, a replaced descriptor, a changed cwd,
 *   POSIX timers, pending signals, kernel state that cannot be set back) is returned as a reason: the caller then kills the
 *   worker and starts a new one from the snapshot (fail closed, never fail open).
 *
 * x86-64 Linux >= 6.7 (WP_ASYNC, PAGEMAP_SCAN) only.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "in-place rewind is implemented for x86-64 only" /* optional: the build skips it */
#endif

/* ---- kernel ABI newer than this machine's headers ------------------------------- */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PTRACE_O_EXITKILL
#define PTRACE_O_EXITKILL (1 << 20)
#endif

struct rw_page_region {
    uint64_t start, end, categories;
};

struct rw_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};

#define RW_PAGEMAP_SCAN _IOWR('f', 16, struct rw_pm_scan_arg)
#define RW_PM_SCAN_WP_MATCHING (1ULL << 0)
#define RW_PM_SCAN_CHECK_WPASYNC (1ULL << 1)
#define RW_PAGE_IS_WPALLOWED (1ULL << 0)
#define RW_PAGE_IS_WRITTEN (1ULL << 1)
#define RW_PAGE_IS_PRESENT (1ULL << 3)

/* ---- limits ------------------------------------------------------------------------ */
#define MAX_REGIONS 8192
#define MAX_UNITS 4096
#define MAX_FDS 256
#define MAX_RANGES 65536
#define MAX_ZOMBIES 256
#define MAPS_BUF (4u << 20)
#define PATH_POOL (1u << 20)
#define SCAN_VEC 256 /* below ~512: walk_end is trustworthy, and we do not rely on it */
#define MAX_SIG 64
/* Pages written by requests stay unprotected (copied back after every reply) while
 * there are at most this many: requests keep writing the same pages, and a write to an
 * unprotected page takes no fault. Above it, everything is protected again. */
#define HOT_LIMIT_PAGES 4096
#define ERESTARTSYS_ 512
#define ERESTARTNOINTR_ 513
#define ERESTARTNOHAND_ 514

struct region {
    uintptr_t start, end;
    unsigned long long offset, inode;
    unsigned int dev_major, dev_minor;
    int prot;
    int shared;
    int special; /* [vvar], [vdso], [vsyscall]: cannot be registered */
    int stack;   /* [stack] */
    int heap;    /* [heap] */
    uint32_t path; /* offset into a path pool, 0 = anonymous */
    size_t backup; /* offset into the backup (writable regions) */
};

struct unit { /* a run of adjacent tracked regions that are all writable, or all not */
    uintptr_t start, end;
    int writable;
};

struct range {
    uintptr_t start, end;
    uint64_t categories;
    int unit;
};

struct saved_fd {
    int fd;
    unsigned flags; /* file status flags, from fdinfo */
    dev_t dev;
    ino_t ino;
};

struct kact { /* the kernel's struct sigaction on x86-64 */
    uint64_t handler, flags, restorer, mask;
};

struct pstatus {
    int threads;
    unsigned umask;
    uint64_t pnd, shdpnd, blk, ign, cgt;
};

struct ckpt {
    pid_t pid;
    int mem_fd, pagemap_fd;
    int uffd;        /* our duplicate of the worker's userfaultfd (it keeps none) */
    int worker_uffd; /* its number in the worker, until capture closes it there */
    int attached;
    struct user_regs_struct resume; /* re-executes read(gate) */
    char xstate[16384];
    size_t xstate_len;
    struct region regions[MAX_REGIONS];
    int nregions;
    char pool[PATH_POOL];
    uint32_t pool_used;
    struct unit units[MAX_UNITS];
    int nunits;
    struct saved_fd fds[MAX_FDS];
    int nfds;
    struct pstatus st;
    struct kact acts[MAX_SIG + 1];
    dev_t cwd_dev;
    ino_t cwd_ino;
    uintptr_t brk, heap_end, stack_start, scratch;
    char *backup;
    size_t backup_len;
    char vdso[65536];
    uintptr_t vdso_start;
    size_t vdso_len;
    pid_t zombies[MAX_ZOMBIES];
    int nzombies;
    int gone, exit_status; /* a wait for a stop found the worker dead (and reaped it) */
    /* statistics of the last rewind */
    unsigned long pages, ranges, injected;
    double last_ms, t_check, t_scan, t_repair, t_restore;
    /* scratch, wiped after every use: it can hold names the request chose */
    struct region cur[MAX_REGIONS];
    int ncur;
    char cur_pool[PATH_POOL];
    uint32_t cur_used;
    char maps_buf[MAPS_BUF];
    size_t maps_len;
    struct range found[MAX_RANGES];
    int nfound;
    struct rw_page_region vec[SCAN_VEC];
};

static struct ckpt *C;
static long page_size;
static void ks_release(void); /* per-process kernel state, below */
static int kstate_capture(const char **what);

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static PyObject *os_error(int err, const char *what) {
    PyObject *v = Py_BuildValue("(is)", err, what);
    if (v) {
        PyErr_SetObject(PyExc_OSError, v);
        Py_DECREF(v);
    }
    return NULL;
}

/* ---- /proc parsing ------------------------------------------------------------------ */

static int read_file_into(const char *path, char *buf, size_t cap, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t used = 0;
    for (;;) {
        if (used + 1 >= cap) {
            close(fd);
            return -E2BIG;
        }
        ssize_t n = read(fd, buf + used, cap - 1 - used);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = 0;
    *len = used;
    return 0;
}

static unsigned long long hex_at(const char **p) {
    unsigned long long v = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9')
            v = v * 16 + (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (unsigned)(c - 'a' + 10);
        else
            return v;
    }
}

static unsigned long long dec_at(const char **p) {
    unsigned long long v = 0;
    while (**p >= '0' && **p <= '9') {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
    }
    return v;
}

/* Parse /proc/PID/maps into out[]; returns the count or -errno. */
static int parse_maps(pid_t pid, struct region *out, char *pool, uint32_t *pool_used) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    int rc = read_file_into(path, C->maps_buf, MAPS_BUF, &C->maps_len);
    if (rc < 0)
        return rc;
    int n = 0;
    *pool_used = 1;
    pool[0] = 0;
    const char *p = C->maps_buf, *end = C->maps_buf + C->maps_len;
    while (p < end) {
        if (n >= MAX_REGIONS)
            return -E2BIG;
        struct region *r = &out[n];
        memset(r, 0, sizeof *r);
        r->start = (uintptr_t)hex_at(&p);
        p++; /* '-' */
        r->end = (uintptr_t)hex_at(&p);
        p++;
        r->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
                  (p[2] == 'x' ? PROT_EXEC : 0);
        r->shared = p[3] == 's';
        p += 5;
        r->offset = hex_at(&p);
        p++;
        r->dev_major = (unsigned)hex_at(&p);
        p++;
        r->dev_minor = (unsigned)hex_at(&p);
        p++;
        r->inode = dec_at(&p);
        while (*p == ' ')
            p++;
        const char *name = p;
        while (p < end && *p != '\n')
            p++;
        size_t nlen = (size_t)(p - name);
        if (nlen) {
            if (*pool_used + nlen + 1 > PATH_POOL)
                return -E2BIG;
            memcpy(pool + *pool_used, name, nlen);
            pool[*pool_used + nlen] = 0;
            r->path = *pool_used;
            *pool_used += (uint32_t)(nlen + 1);
            const char *nm = pool + r->path;
            r->special = nm[0] == '[' && nm[1] == 'v'; /* vdso, vvar, vvar_vclock, vsyscall */
            r->stack = !strcmp(nm, "[stack]");
            r->heap = !strcmp(nm, "[heap]");
        }
        if (p < end)
            p++;
        n++;
    }
    return n;
}

static int same_region(const struct region *a, const char *apool, const struct region *b,
                       const char *bpool) {
    if (a->start != b->start || a->end != b->end || a->prot != b->prot ||
        a->shared != b->shared || a->offset != b->offset || a->inode != b->inode ||
        a->dev_major != b->dev_major || a->dev_minor != b->dev_minor)
        return 0;
    return strcmp(apool + a->path, bpool + b->path) == 0;
}

static uint64_t hex_field(const char *buf, const char *key) {
    const char *p = strstr(buf, key);
    if (!p)
        return ~0ULL;
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    return hex_at(&p);
}

static long dec_field(const char *buf, const char *key) {
    const char *p = strstr(buf, key);
    if (!p)
        return -1;
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    return (long)dec_at(&p);
}

static int read_status(pid_t pid, struct pstatus *st) {
    char path[64], buf[4096];
    size_t len;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int rc = read_file_into(path, buf, sizeof buf, &len);
    if (rc < 0)
        return rc;
    st->threads = (int)dec_field(buf, "\nThreads:");
    const char *u = strstr(buf, "\nUmask:");
    st->umask = 0;
    if (u) {
        u += 7;
        while (*u == ' ' || *u == '\t')
            u++;
        while (*u >= '0' && *u <= '7')
            st->umask = st->umask * 8 + (unsigned)(*u++ - '0');
    }
    st->pnd = hex_field(buf, "\nSigPnd:");
    st->shdpnd = hex_field(buf, "\nShdPnd:");
    st->blk = hex_field(buf, "\nSigBlk:");
    st->ign = hex_field(buf, "\nSigIgn:");
    st->cgt = hex_field(buf, "\nSigCgt:");
    return st->threads > 0 ? 0 : -EPROTO;
}

/* Descriptors of PID: numbers, the file each refers to, and status flags. */
static int read_fds(pid_t pid, struct saved_fd *out, int cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    char buf[4096];
    int n = 0;
    for (;;) {
        long got = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (got < 0) {
            int e = errno;
            close(dfd);
            return -e;
        }
        if (got == 0)
            break;
        for (long off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            if (n >= cap) {
                close(dfd);
                return -EMFILE;
            }
            struct saved_fd *s = &out[n++];
            memset(s, 0, sizeof *s);
            s->fd = atoi(d->d_name);
            struct stat stt;
            if (fstatat(dfd, d->d_name, &stt, 0) == 0) {
                s->dev = stt.st_dev;
                s->ino = stt.st_ino;
            }
            char ipath[64], info[1024];
            size_t ilen;
            snprintf(ipath, sizeof ipath, "/proc/%d/fdinfo/%d", (int)pid, s->fd);
            if (read_file_into(ipath, info, sizeof info, &ilen) == 0) {
                const char *f = strstr(info, "flags:");
                if (f) {
                    f += 6;
                    while (*f == ' ' || *f == '\t')
                        f++;
                    while (*f >= '0' && *f <= '7')
                        s->flags = s->flags * 8 + (unsigned)(*f++ - '0');
                }
            }
        }
    }
    close(dfd);
    return n;
}

static int read_children(pid_t pid, pid_t *out, int cap) {
    char path[64], buf[4096];
    size_t len;
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    int rc = read_file_into(path, buf, sizeof buf, &len);
    if (rc < 0)
        return rc;
    int n = 0;
    const char *p = buf;
    while (*p && n < cap) {
        while (*p == ' ')
            p++;
        if (!*p || *p == '\n')
            break;
        out[n++] = (pid_t)dec_at(&p);
    }
    return n;
}

/* ---- ptrace ------------------------------------------------------------------------- */

/* Wait for the next ptrace stop of the worker; -ESRCH when it is gone. */
static int wait_stop(int *status) {
    for (;;) {
        pid_t got = waitpid(C ? C->pid : -1, status, __WALL);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -errno;
        if (WIFSTOPPED(*status))
            return 0;
        if (C) {
            C->gone = 1;
            C->exit_status = *status;
        }
        return -ESRCH; /* exited or killed */
    }
}

static int seize_stop(pid_t pid) {
    if (ptrace(PTRACE_SEIZE, pid, 0, (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) <
        0)
        return -errno;
    C->attached = 1;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0)
        return -errno;
    int status;
    return wait_stop(&status);
}

static int detach(void) {
    if (!C->attached)
        return 0;
    C->attached = 0;
    return ptrace(PTRACE_DETACH, C->pid, 0, 0) < 0 ? -errno : 0;
}

/* Resume the stopped worker with PTRACE_SYSCALL until its next syscall stop; signal
 * stops on the way (a SIGCHLD from a killed child, say) are swallowed. */
static int next_syscall_stop(void) {
    for (int tries = 0; tries < 64; tries++) {
        if (ptrace(PTRACE_SYSCALL, C->pid, 0, 0) < 0)
            return -errno;
        int status;
        int rc = wait_stop(&status);
        if (rc < 0)
            return rc;
        if (WSTOPSIG(status) == (SIGTRAP | 0x80))
            return 0;
    }
    return -EPROTO;
}

/* Make the worker run one system call at the checkpoint's syscall instruction. */
static int inject6(long nr, long a1, long a2, long a3, long a4, long a5, long a6, long *ret) {
    struct user_regs_struct r = C->resume;
    r.rax = (unsigned long long)nr;
    r.orig_rax = (unsigned long long)-1;
    r.rdi = (unsigned long long)a1;
    r.rsi = (unsigned long long)a2;
    r.rdx = (unsigned long long)a3;
    r.r10 = (unsigned long long)a4;
    r.r8 = (unsigned long long)a5;
    r.r9 = (unsigned long long)a6;
    if (ptrace(PTRACE_SETREGS, C->pid, 0, &r) < 0)
        return -errno;
    int rc = next_syscall_stop(); /* entry */
    if (rc == 0)
        rc = next_syscall_stop(); /* exit */
    if (rc < 0)
        return rc;
    if (ptrace(PTRACE_GETREGS, C->pid, 0, &r) < 0)
        return -errno;
    C->injected++;
    *ret = (long)r.rax;
    return 0;
}

static int inject(long nr, long a1, long a2, long a3, long a4, long *ret) {
    return inject6(nr, a1, a2, a3, a4, 0, 0, ret);
}

static int put_registers(void) {
    if (ptrace(PTRACE_SETREGS, C->pid, 0, &C->resume) < 0)
        return -errno;
    struct iovec iov = {C->xstate, C->xstate_len};
    if (ptrace(PTRACE_SETREGSET, C->pid, (void *)NT_X86_XSTATE, &iov) < 0)
        return -errno;
    return 0;
}

static int poke(uintptr_t addr, const void *data, size_t len) {
    ssize_t n = pwrite(C->mem_fd, data, len, (off_t)addr);
    return n == (ssize_t)len ? 0 : (n < 0 ? -errno : -EIO);
}

/* ---- the userfaultfd (worker side) --------------------------------------------------- */

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
static int protect(uintptr_t start, uintptr_t end) {
    struct rw_pm_scan_arg arg = {
        .size = sizeof arg,
        .flags = RW_PM_SCAN_WP_MATCHING | RW_PM_SCAN_CHECK_WPASYNC,
        .start = start,
        .end = end,
        .category_mask = RW_PAGE_IS_WRITTEN,
        .return_mask = RW_PAGE_IS_WRITTEN,
    };
    return ioctl(C->pagemap_fd, RW_PAGEMAP_SCAN, &arg) < 0 ? -errno : 0;
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

/* ---- checkpoint -------------------------------------------------------------------- */

static void wipe_scratch(void) {
    memset(C->maps_buf, 0, C->maps_len + 1);
    memset(C->cur_pool, 0, C->cur_used);
    memset(C->cur, 0, sizeof(struct region) * (size_t)C->ncur);
    memset(C->found, 0, sizeof(struct range) * (size_t)C->nfound);
    C->maps_len = C->cur_used = 0;
    C->ncur = C->nfound = 0;
}

static void release(void) {
    if (!C)
        return;
    if (C->attached)
        detach();
    if (C->mem_fd >= 0)
        close(C->mem_fd);
    if (C->pagemap_fd >= 0)
        close(C->pagemap_fd);
    if (C->uffd >= 0)
        close(C->uffd);
    if (C->backup)
        munmap(C->backup, C->backup_len);
    ks_release();
    munmap(C, sizeof *C);
    C = NULL;
}

static int alloc_state(pid_t pid) {
    release();
    page_size = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, sizeof(struct ckpt), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    madvise(p, sizeof(struct ckpt), MADV_DONTFORK); /* later workers start without it */
    C = p;
    C->pid = pid;
    C->mem_fd = C->pagemap_fd = C->uffd = -1;
    return 0;
}

static int is_tracked(const struct region *r) { return !r->shared && !r->special; }

static int find_region(const struct region *rs, int n, uintptr_t addr) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (addr < rs[mid].start)
            hi = mid - 1;
        else if (addr >= rs[mid].end)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

/* Give back backup pages that hold only zeros (memory never written, a calloc'd
 * buffer): they read as zeros again, and the backup costs only what holds data. */
static void drop_zero_pages(char *p, size_t len) {
    static const char zero[4096];
    size_t ps = (size_t)page_size, run = 0;
    for (size_t off = 0; off + ps <= len; off += ps) {
        int z = ps <= sizeof zero && memcmp(p + off, zero, ps) == 0;
        if (z) {
            run += ps;
            continue;
        }
        if (run)
            madvise(p + off - run, run, MADV_DONTNEED);
        run = 0;
    }
    if (run)
        madvise(p + (len / ps) * ps - run, run, MADV_DONTNEED);
}

/* Stop the worker once it is blocked in read(gate): that is the checkpoint. */
static int stop_at_gate(int gate_fd, struct user_regs_struct *regs) {
    int rc = seize_stop(C->pid);
    double limit = now_ms() + 10000;
    while (rc == 0) {
        if (ptrace(PTRACE_GETREGS, C->pid, 0, regs) < 0)
            return -errno;
        long err = -(long)regs->rax;
        if (regs->orig_rax == SYS_read && regs->rdi == (unsigned long long)gate_fd &&
            (err == ERESTARTSYS_ || err == ERESTARTNOINTR_ || err == ERESTARTNOHAND_))
            return 0;
        if (now_ms() > limit)
            return -ETIMEDOUT;
        if (ptrace(PTRACE_CONT, C->pid, 0, 0) < 0)
            return -errno;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        if (ptrace(PTRACE_INTERRUPT, C->pid, 0, 0) < 0)
            return -errno;
        int status;
        rc = wait_stop(&status);
    }
    return rc;
}

static int capture_state(int gate_fd, const char **what) {
    struct user_regs_struct regs;
    int rc;
    char path[64];
    if ((rc = stop_at_gate(gate_fd, &regs)) < 0)
        return *what = "stopping the worker at its gate", rc;
    /* Resuming means executing read(gate) again: back up over the syscall instruction. */
    C->resume = regs;
    C->resume.rip -= 2;
    C->resume.rax = regs.orig_rax;
    C->resume.orig_rax = (unsigned long long)-1;
    struct iovec iov = {C->xstate, sizeof C->xstate};
    if (ptrace(PTRACE_GETREGSET, C->pid, (void *)NT_X86_XSTATE, &iov) < 0)
        return *what = "reading the FPU state", -errno;
    C->xstate_len = iov.iov_len;
    snprintf(path, sizeof path, "/proc/%d/mem", (int)C->pid);
    C->mem_fd = open(path, O_RDWR | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)C->pid);
    C->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (C->mem_fd < 0 || C->pagemap_fd < 0)
        return *what = "opening the worker's mem and pagemap", -errno;
    unsigned char insn[2];
    if (pread(C->mem_fd, insn, 2, (off_t)C->resume.rip) != 2 || insn[0] != 0x0f ||
        insn[1] != 0x05)
        return *what = "finding the checkpoint's syscall instruction", -EPROTO;
    /* Take the worker's userfaultfd and close it in the worker: only we can re-register
     * memory, and the worker has nothing to re-protect pages with. */
    int pidfd = (int)syscall(SYS_pidfd_open, C->pid, 0);
    int dup = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, C->worker_uffd, 0);
    int err = errno;
    if (pidfd >= 0)
        close(pidfd);
    if (dup < 0)
        return *what = "taking the worker's userfaultfd (pidfd_getfd)", -err;
    long closed;
    C->uffd = dup;
    if ((rc = inject(SYS_close, C->worker_uffd, 0, 0, 0, &closed)) < 0 || closed != 0)
        return *what = "closing the worker's userfaultfd", rc < 0 ? rc : -EBADF;
    if ((rc = read_status(C->pid, &C->st)) < 0)
        return *what = "reading the worker's status", rc;
    if (C->st.threads != 1)
        return *what = "the worker has more than one thread", -EBUSY;
    if ((rc = read_fds(C->pid, C->fds, MAX_FDS)) < 0)
        return *what = "listing the worker's descriptors", rc;
    C->nfds = rc;
    struct stat cst;
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)C->pid);
    if (stat(path, &cst) < 0)
        return *what = "reading the worker's cwd", -errno;
    C->cwd_dev = cst.st_dev;
    C->cwd_ino = cst.st_ino;
    int n = parse_maps(C->pid, C->regions, C->pool, &C->pool_used);
    if (n < 0)
        return *what = "reading the worker's maps", n;
    C->nregions = n;
    /* Scratch for injected calls: the lowest page of the stack, far below its use. */
    for (int i = 0; i < n; i++) {
        struct region *r = &C->regions[i];
        if (r->stack) {
            C->stack_start = r->start;
            if (regs.rsp - r->start < (uintptr_t)page_size * 2)
                return *what = "the stack has no room below the checkpoint", -ENOSPC;
            C->scratch = r->start;
        }
        if (r->heap)
            C->heap_end = r->end;
        if (r->shared && (r->prot & PROT_WRITE))
            return *what = "a shared writable mapping cannot be rewound", -ENOTSUP;
    }
    if (!C->scratch)
        return *what = "the worker has no [stack] mapping", -ENOENT;
    /* Signal dispositions the checkpoint catches: read them through the scratch page. */
    for (int sig = 1; sig <= MAX_SIG; sig++) {
        struct kact *a = &C->acts[sig];
        memset(a, 0, sizeof *a);
        uint64_t bit = 1ULL << (sig - 1);
        if (C->st.ign & bit)
            a->handler = (uint64_t)(uintptr_t)SIG_IGN;
        if (!(C->st.cgt & bit))
            continue;
        long ret;
        if ((rc = inject(SYS_rt_sigaction, sig, 0, (long)C->scratch, 8, &ret)) < 0 || ret < 0)
            return *what = "reading a signal disposition", rc < 0 ? rc : (int)ret;
        if (pread(C->mem_fd, a, sizeof *a, (off_t)C->scratch) != (ssize_t)sizeof *a)
            return *what = "reading a signal disposition", -EIO;
    }
    long brk_now;
    if ((rc = inject(SYS_brk, 0, 0, 0, 0, &brk_now)) < 0)
        return *what = "reading brk", rc;
    C->brk = (uintptr_t)brk_now;
    if ((rc = kstate_capture(what)) < 0)
        return rc;
    /* Back up every writable private mapping; reading also makes each page present,
     * so a page that is missing later was dropped during a request. */
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        struct region *r = &C->regions[i];
        if (is_tracked(r) && (r->prot & PROT_WRITE)) {
            r->backup = total;
            total += r->end - r->start;
        }
        if (r->special && r->path && !strcmp(C->pool + r->path, "[vdso]")) {
            C->vdso_start = r->start;
            C->vdso_len = r->end - r->start;
        }
    }
    C->backup_len = total ? total : (size_t)page_size;
    C->backup = mmap(NULL, C->backup_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (C->backup == MAP_FAILED) {
        C->backup = NULL;
        return *what = "allocating the backup", -ENOMEM;
    }
    madvise(C->backup, C->backup_len, MADV_DONTFORK);
    for (int i = 0; i < n; i++) {
        struct region *r = &C->regions[i];
        size_t len = r->end - r->start;
        if (!is_tracked(r) || !(r->prot & PROT_WRITE))
            continue;
        if (pread(C->mem_fd, C->backup + r->backup, len, (off_t)r->start) != (ssize_t)len)
            return *what = "copying the worker's memory", -EIO;
        drop_zero_pages(C->backup + r->backup, len);
    }
    if (C->vdso_len > sizeof C->vdso ||
        (C->vdso_len && pread(C->mem_fd, C->vdso, C->vdso_len, (off_t)C->vdso_start) !=
                            (ssize_t)C->vdso_len))
        return *what = "reading the vdso", -EIO;
    /* Units: runs of adjacent tracked regions, scanned with one call each. */
    C->nunits = 0;
    for (int i = 0; i < n; i++) {
        struct region *r = &C->regions[i];
        if (!is_tracked(r))
            continue;
        int writable = (r->prot & PROT_WRITE) != 0;
        if (C->nunits && C->units[C->nunits - 1].end == r->start && i > 0 &&
            is_tracked(&C->regions[i - 1]) && C->units[C->nunits - 1].writable == writable)
            C->units[C->nunits - 1].end = r->end;
        else {
            if (C->nunits >= MAX_UNITS)
                return *what = "too many mappings", -E2BIG;
            C->units[C->nunits].start = r->start;
            C->units[C->nunits].end = r->end;
            C->units[C->nunits++].writable = writable;
        }
    }
    for (int i = 0; i < C->nunits; i++)
        if ((rc = protect(C->units[i].start, C->units[i].end)) < 0)
            return *what = "write-protecting the worker (is every mapping tracked?)", rc;
    return 0;
}

/* ---- rewind ----------------------------------------------------------------------- */

/* Collect the pages to restore into C->found: in writable units, written or dropped
 * ones (every page there was made present at the checkpoint); in read-only units,
 * written ones only, which check_found refuses. -EPERM when a mapping lost its
 * registration (it was unmapped and mapped again in the same place). */
static int scan_units(int writable) {
    C->nfound = 0;
    for (int u = 0; u < C->nunits; u++) {
        if (C->units[u].writable != writable)
            continue;
        uintptr_t pos = C->units[u].start, end = C->units[u].end;
        while (pos < end) {
            struct rw_pm_scan_arg arg = {
                .size = sizeof arg,
                .flags = RW_PM_SCAN_CHECK_WPASYNC,
                .start = pos,
                .end = end,
                .vec = (uintptr_t)C->vec,
                .vec_len = SCAN_VEC,
                .category_inverted = RW_PAGE_IS_PRESENT,
                .category_mask = RW_PAGE_IS_WPALLOWED,
                .category_anyof_mask = RW_PAGE_IS_WRITTEN | RW_PAGE_IS_PRESENT,
                .return_mask = RW_PAGE_IS_WRITTEN | RW_PAGE_IS_PRESENT,
            };
            if (!C->units[u].writable) {
                arg.category_inverted = 0;
                arg.category_anyof_mask = 0;
                arg.category_mask = RW_PAGE_IS_WPALLOWED | RW_PAGE_IS_WRITTEN;
                arg.return_mask = RW_PAGE_IS_WRITTEN;
            }
            long got = ioctl(C->pagemap_fd, RW_PAGEMAP_SCAN, &arg);
            if (got < 0)
                return -errno;
            for (long i = 0; i < got; i++) {
                if (C->nfound >= MAX_RANGES)
                    return -E2BIG;
                C->found[C->nfound].start = C->vec[i].start;
                C->found[C->nfound].end = C->vec[i].end;
                C->found[C->nfound].categories = C->vec[i].categories;
                C->found[C->nfound++].unit = u;
            }
            if (got < SCAN_VEC)
                break; /* the output buffer is not full: the walk is complete */
            pos = C->vec[got - 1].end;
        }
    }
    return 0;
}

/* After the read-only scan: any written page there means code or RELRO was patched,
 * and there is no backup of it. */
static const char *check_found(void) {
    return C->nfound ? "read-only memory (code or RELRO) was written" : NULL;
}

struct plan {
    uintptr_t unmap_start[MAX_REGIONS / 4], unmap_end[MAX_REGIONS / 4];
    int nunmap;
    int reset_brk;
    uintptr_t heap_regrow; /* after brk is reset, register [heap_regrow, heap_end) */
    int recreate[MAX_REGIONS / 4]; /* checkpoint regions to map again */
    int nrecreate;
    int close_fd[MAX_FDS], nclose;
    int setfl_fd[MAX_FDS], nsetfl;
};
static struct plan P;

/* Plan to unmap [start, end); NULL, or why not. */
static const char *plan_unmap(uintptr_t start, uintptr_t end) {
    if (P.nunmap >= (int)(sizeof P.unmap_start / sizeof P.unmap_start[0]))
        return "too many new mappings";
    P.unmap_start[P.nunmap] = start;
    P.unmap_end[P.nunmap++] = end;
    return NULL;
}

/* A mapping that is in no checkpoint region: it goes, unless it is special. */
static const char *plan_new(const struct region *c) {
    return c->special ? "a special mapping moved" : plan_unmap(c->start, c->end);
}

/* Anonymous private writable memory can be mapped again and refilled from the backup;
 * anything else that was removed or changed cannot be put back. */
static int recreatable(const struct region *k) {
    return !k->shared && (k->prot & PROT_WRITE) && !k->path && !k->inode;
}

/* Compare the worker's mappings with the checkpoint's and plan the repairs. */
static const char *plan_maps(void) {
    int n = parse_maps(C->pid, C->cur, C->cur_pool, &C->cur_used);
    if (n < 0)
        return "reading the worker's maps failed";
    C->ncur = n;
    P.nunmap = P.nrecreate = 0;
    P.reset_brk = 0;
    P.heap_regrow = 0;
    int j = 0;
    for (int i = 0; i < C->nregions; i++) {
        const struct region *k = &C->regions[i];
        const char *why;
        for (; j < n && C->cur[j].end <= k->start; j++)
            if ((why = plan_new(&C->cur[j])) != NULL)
                return why;
        if (j < n && k->stack && C->cur[j].stack && C->cur[j].end == k->end &&
            C->cur[j].start < k->start && C->cur[j].prot == k->prot) {
            /* the stack grew below its checkpoint extent: drop the growth */
            if ((why = plan_unmap(C->cur[j].start, k->start)) != NULL)
                return why;
            j++;
            continue;
        }
        if (j < n && k->heap && C->cur[j].heap && C->cur[j].start == k->start &&
            C->cur[j].end < k->end && C->cur[j].prot == k->prot) {
            /* malloc gave memory back: brk grows it again, then it is registered */
            P.reset_brk = 1;
            P.heap_regrow = C->cur[j].end;
            j++;
            continue;
        }
        if (j < n && same_region(&C->cur[j], C->cur_pool, k, C->pool)) {
            j++;
            continue;
        }
        if (!recreatable(k))
            return "a checkpoint mapping was removed, moved or re-protected";
        /* Removed or changed (munmap of an arena, mprotect, a new mapping on top):
         * clear the whole range, map it again, refill it from the backup. */
        if ((why = plan_unmap(k->start, k->end)) != NULL)
            return why;
        if (P.nrecreate >= (int)(sizeof P.recreate / sizeof P.recreate[0]))
            return "too many removed mappings";
        P.recreate[P.nrecreate++] = i;
        for (; j < n && C->cur[j].end <= k->end; j++)
            ;
    }
    for (; j < n; j++) {
        const char *why = plan_new(&C->cur[j]);
        if (why)
            return why;
    }
    /* A heap that grew shows as new [heap] regions above the checkpoint's end; brk
     * is reset rather than unmapped, so the kernel's brk agrees with malloc's. */
    int keep = 0;
    for (int i = 0; i < P.nunmap; i++) {
        int k = find_region(C->cur, n, P.unmap_start[i]);
        if (k >= 0 && C->cur[k].heap && P.unmap_start[i] >= C->heap_end) {
            P.reset_brk = 1;
            continue;
        }
        P.unmap_start[keep] = P.unmap_start[i];
        P.unmap_end[keep++] = P.unmap_end[i];
    }
    P.nunmap = keep;
    return NULL;
}

/* Compare descriptors with the checkpoint's: plan closes and flag fixes, refuse a
 * checkpoint descriptor that was closed or replaced. */
static const char *plan_fds(void) {
    struct saved_fd now[MAX_FDS];
    int n = read_fds(C->pid, now, MAX_FDS);
    if (n < 0)
        return "the request opened too many descriptors";
    int seen = 0;
    P.nclose = P.nsetfl = 0;
    for (int i = 0; i < n; i++) {
        const struct saved_fd *s = NULL;
        for (int k = 0; k < C->nfds; k++)
            if (C->fds[k].fd == now[i].fd)
                s = &C->fds[k];
        if (!s) {
            P.close_fd[P.nclose++] = now[i].fd;
            continue;
        }
        seen++;
        if (s->dev != now[i].dev || s->ino != now[i].ino)
            return "a checkpoint descriptor was replaced";
        if (s->flags != now[i].flags)
            P.setfl_fd[P.nsetfl++] = (int)(s - C->fds);
    }
    return seen == C->nfds ? NULL : "a checkpoint descriptor was closed";
}

/* Register [start, end) of the worker with its userfaultfd (our duplicate of it). */
static const char *register_in_worker(uintptr_t start, uintptr_t end) {
    struct uffdio_register reg = {
        .range = {.start = start, .len = end - start},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    return ioctl(C->uffd, UFFDIO_REGISTER, &reg) < 0 ? "registering a re-created mapping failed"
                                                      : NULL;
}

/* Unmap what is new, reset brk, map removed memory again; then the list must be the
 * checkpoint's exactly. */
static const char *repair_maps(void) {
    long ret;
    const char *why;
    for (int i = 0; i < P.nunmap; i++)
        if (inject(SYS_munmap, (long)P.unmap_start[i], (long)(P.unmap_end[i] - P.unmap_start[i]),
                   0, 0, &ret) < 0 ||
            ret != 0)
            return "unmapping a new mapping failed";
    if (P.reset_brk && (inject(SYS_brk, (long)C->brk, 0, 0, 0, &ret) < 0 ||
                        (uintptr_t)ret != C->brk))
        return "resetting brk failed";
    if (P.heap_regrow && (why = register_in_worker(P.heap_regrow, C->heap_end)) != NULL)
        return why;
    for (int i = 0; i < P.nrecreate; i++) {
        const struct region *k = &C->regions[P.recreate[i]];
        if (inject6(SYS_mmap, (long)k->start, (long)(k->end - k->start), k->prot,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0, &ret) < 0 ||
            (uintptr_t)ret != k->start)
            return "mapping a removed mapping again failed";
        if ((why = register_in_worker(k->start, k->end)) != NULL)
            return why;
    }
    if (!P.nunmap && !P.reset_brk && !P.nrecreate)
        return NULL;
    memset(C->cur_pool, 0, C->cur_used);
    int n = parse_maps(C->pid, C->cur, C->cur_pool, &C->cur_used);
    if (n != C->nregions)
        return "the mappings differ from the checkpoint's after the repair";
    for (int i = 0; i < n; i++)
        if (!same_region(&C->cur[i], C->cur_pool, &C->regions[i], C->pool))
            return "the mappings differ from the checkpoint's after the repair";
    return NULL;
}

static const char *check_kernel_state(const struct pstatus *st) {
    if (st->threads != 1)
        return "the request left threads";
    /* SIGCHLD, SIGURG, SIGWINCH and SIGCONT are ignored by default: harmless. */
    uint64_t harmless = (1ULL << (SIGCHLD - 1)) | (1ULL << (SIGURG - 1)) |
                        (1ULL << (SIGWINCH - 1)) | (1ULL << (SIGCONT - 1));
    if ((st->pnd | st->shdpnd) & ~harmless)
        return "signals are pending";
    struct stat cst;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)C->pid);
    if (stat(path, &cst) < 0 || cst.st_dev != C->cwd_dev || cst.st_ino != C->cwd_ino)
        return "the working directory changed";
    snprintf(path, sizeof path, "/proc/%d/timers", (int)C->pid);
    char buf[256];
    size_t len = 0;
    if (read_file_into(path, buf, sizeof buf, &len) == 0 && len > 0)
        return "the request created POSIX timers";
    if (C->vdso_len) {
        char now[sizeof C->vdso];
        if (pread(C->mem_fd, now, C->vdso_len, (off_t)C->vdso_start) != (ssize_t)C->vdso_len ||
            memcmp(now, C->vdso, C->vdso_len) != 0)
            return "the vdso was modified";
    }
    return NULL;
}

/* The other kernel-side repairs, as system calls made by the stopped worker. */
static const char *repair(const struct pstatus *st) {
    long ret;
    for (int i = 0; i < P.nclose; i++)
        if (inject(SYS_close, P.close_fd[i], 0, 0, 0, &ret) < 0)
            return "closing a request's descriptor failed";
    for (int i = 0; i < P.nsetfl; i++) {
        const struct saved_fd *f = &C->fds[P.setfl_fd[i]];
        if (inject(SYS_fcntl, f->fd, F_SETFL, (long)f->flags, 0, &ret) < 0 || ret < 0)
            return "restoring a descriptor's flags failed";
    }
    /* Signal dispositions: whatever is or was caught, and whatever changed. */
    for (int sig = 1; sig <= MAX_SIG; sig++) {
        uint64_t bit = 1ULL << (sig - 1);
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (!((C->st.cgt | st->cgt) & bit) && !((C->st.ign ^ st->ign) & bit))
            continue;
        if (poke(C->scratch, &C->acts[sig], sizeof C->acts[sig]) < 0 ||
            inject(SYS_rt_sigaction, sig, (long)C->scratch, 0, 8, &ret) < 0 || ret != 0)
            return "restoring a signal disposition failed";
    }
    if (st->blk != C->st.blk &&
        (poke(C->scratch, &C->st.blk, 8) < 0 ||
         inject(SYS_rt_sigprocmask, SIG_SETMASK, (long)C->scratch, 0, 8, &ret) < 0 || ret != 0))
        return "restoring the signal mask failed";
    if (st->umask != C->st.umask && inject(SYS_umask, (long)C->st.umask, 0, 0, 0, &ret) < 0)
        return "restoring the umask failed";
    /* Children killed by stop() are the worker's zombies now: reap them in it. */
    for (int i = 0; i < C->nzombies; i++)
        if (inject(SYS_wait4, C->zombies[i], 0, __WALL, 0, &ret) < 0)
            return "reaping a killed child failed";
    C->nzombies = 0;
    pid_t kids[64];
    if (read_children(C->pid, kids, 64) != 0)
        return "the worker still has children";
    return NULL;
}

/* ---- per-process kernel state ------------------------------------------------------ */
/*
 * What a process can change on itself and keep from one request to the next, besides
 * memory, descriptors and signals: limits, scheduling, prctl flags, timers, the
 * alternate signal stack, memory-area flags, seccomp filters, credentials. Recorded at
 * the checkpoint (kstate_capture), then after every request:
 *   kstate_check_identity()   before any injected call: what no rewind may put back
 *            (seccomp filters, no_new_privs, rseq, credentials, capabilities, process
 *            group, session, namespaces, root, KSM). A seccomp filter could make the
 *            injected calls below lie: any change means a new worker, with nothing
 *            injected. (Syscall user dispatch, which could too, and Landlock, which has
 *            no outside view, are refused to the worker by its own filter: confine().)
 *   kstate_restore_outside()  what the snapshot process can read and set itself:
 *            rlimits, affinity, scheduling policy and nice, I/O priority,
 *            oom_score_adj, coredump_filter (and timer slack when it may).
 *   kstate_restore_injected() what only the worker can set, or read: comm,
 *            personality, the robust-futex list, prctl/arch_prctl flags, interval timers,
 *            sigaltstack, mlock, madvise flags (VmFlags in smaps).
 * Everything set is read again (from outside where there is a view) and compared;
 * what still differs is returned as a reason: the worker is replaced.
 */
#define RW_PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#define KS_NLIMITS 16
#define KS_TEXT 16384

struct rw_sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

struct rw_rseq_cfg {
    uint64_t abi_pointer;
    uint32_t abi_size, signature, flags, pad;
};

struct rw_altstack {
    uint64_t sp;
    int32_t flags, pad;
    uint64_t size;
};

/* A value only the worker can read (a getter injected into it) and set back. The
 * getter's result is its return value, or an int it writes to the scratch page (the
 * argument number ptr_at). The setter takes the value as argument val_at. */
struct kgetter {
    const char *what;
    long nr, a1, a2;
    int ptr_at;
    long snr, s1, s2;
    int val_at;
};

static const struct kgetter KGET[] = {
    {"the parent-death signal", SYS_prctl, PR_GET_PDEATHSIG, 0, 2, SYS_prctl,
     PR_SET_PDEATHSIG, 0, 2},
    {"the child-subreaper flag", SYS_prctl, PR_GET_CHILD_SUBREAPER, 0, 2, SYS_prctl,
     PR_SET_CHILD_SUBREAPER, 0, 2},
    {"the dumpable flag", SYS_prctl, PR_GET_DUMPABLE, 0, 0, SYS_prctl, PR_SET_DUMPABLE, 0, 2},
    {"the THP-disable flag", SYS_prctl, PR_GET_THP_DISABLE, 0, 0, SYS_prctl,
     PR_SET_THP_DISABLE, 0, 2},
    {"the NUMA memory policy", SYS_get_mempolicy, 0, 0, 1, SYS_set_mempolicy, 0, 0, 1},
};
#define NKGET ((int)(sizeof KGET / sizeof KGET[0]))
/* The timer slack's getter, used when /proc/PID/timerslack_ns may not be (no CAP_SYS_NICE). */
static const struct kgetter KG_SLACK = {
    "the timer slack", SYS_prctl, PR_GET_TIMERSLACK, 0, 0, SYS_prctl, PR_SET_TIMERSLACK, 0, 2};

/* The two-letter VmFlags of smaps, one bit each; anything unknown is bit 63. */
static const char VMCODES[][3] = {
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "dw", "lo", "io", "sr",
    "rr", "dc", "de", "ac", "nr", "ht", "sf", "nl", "ar", "wf", "dd", "sd", "mm", "hg",
    "nh", "mg", "bt", "mt", "um", "uw", "ss", "sl", "lf", "gu", "pt", "dx"};
#define VMF(code) (1ULL << vmbit(code))

/* Status lines that no rewind may put back; a change means a new worker. Seccomp and
 * NoNewPrivs come first so the reason names them. */
static const char *const ID_KEYS[] = {
    "Seccomp:", "Seccomp_filters:", "NoNewPrivs:", "Uid:", "Gid:", "Groups:",
    "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NSpgid:", "NSsid:",
    "Speculation_Store_Bypass:", "SpeculationIndirectBranch:", "untag_mask:",
    "x86_Thread_features:", "x86_Thread_features_locked:", NULL};
static const char *const NS_NAMES[] = {
    "cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children",
    "user", "uts", NULL};
/* Fields of /proc/PID/stat (1-based): pgrp, session, tty, code/stack and the mm
 * addresses PR_SET_MM changes. */
static const int STAT_FIELDS[] = {5, 6, 7, 26, 27, 28, 45, 46, 47, 48, 49, 50, 51, 0};

struct kstate {
    char id_text[KS_TEXT];
    unsigned long long stat_fields[16];
    struct stat ns[16], root;
    struct rw_rseq_cfg rseq;
    int has_rseq;
    char ksm[256];
    struct rlimit rl[KS_NLIMITS];
    cpu_set_t cpus;
    int nice, ioprio;
    struct rw_sched_attr sched;
    char oom[32], coredump[32], comm[32];
    unsigned long persona;
    unsigned long long slack;
    int slack_outside;
    uint64_t robust_head;
    size_t robust_len;
    long got[NKGET + 1];
    int has[NKGET + 1];
    struct itimerval it[3];
    struct rw_altstack alt;
    uint64_t vmflags[MAX_REGIONS];
    /* Address ranges without special mappings, over which the madvise flags a request
     * may add are cleared by one call per advice (holes are skipped by the kernel);
     * without them (a checkpoint that holds such flags), smaps is read every time. */
    uintptr_t madv_start[8], madv_end[8];
    int nmadv, madv_fast;
    char text[KS_TEXT]; /* scratch for /proc texts; wiped after use */
    char why[160];
};
static struct kstate *K;

static int vmbit(const char *c) {
    for (int i = 0; i < (int)(sizeof VMCODES / sizeof VMCODES[0]); i++)
        if (VMCODES[i][0] == c[0] && VMCODES[i][1] == c[1])
            return i;
    return 63;
}

static void ks_wipe(void) { memset(K->text, 0, sizeof K->text); }

static void ks_release(void) {
    if (K)
        munmap(K, sizeof *K);
    K = NULL;
}

static int ks_read(const char *name, char *out, size_t cap) {
    char path[96];
    size_t len;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)C->pid, name);
    return read_file_into(path, out, cap, &len);
}

static int ks_write(const char *name, const char *text) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)C->pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -(n < 0 ? e : EIO);
}

/* The status lines of ID_KEYS, in that order, into out; -errno on failure. */
static int ks_identity_text(char *out, size_t cap) {
    int rc = ks_read("status", K->text, sizeof K->text);
    if (rc < 0)
        return rc;
    size_t used = 0;
    out[0] = 0;
    for (int k = 0; ID_KEYS[k]; k++) {
        char key[48];
        snprintf(key, sizeof key, "\n%s", ID_KEYS[k]);
        const char *p = strstr(K->text, key);
        if (!p)
            continue;
        p++;
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (used + n + 2 > cap)
            return -E2BIG;
        memcpy(out + used, p, n);
        used += n;
        out[used++] = '\n';
        out[used] = 0;
    }
    return 0;
}

/* The first ID_KEYS line that differs between two identity texts. */
static const char *ks_identity_diff(const char *a, const char *b) {
    while (*a && *b) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t na = ea ? (size_t)(ea - a) : strlen(a), nb = eb ? (size_t)(eb - b) : strlen(b);
        if (na != nb || memcmp(a, b, na) != 0)
            break;
        a += na + (ea != NULL);
        b += nb + (eb != NULL);
    }
    if (!*a && !*b)
        return NULL;
    const char *colon = strchr(*a ? a : b, ':');
    int n = colon ? (int)(colon - (*a ? a : b)) : 16;
    snprintf(K->why, sizeof K->why, "the request changed the worker's %.*s (/proc/PID/status)",
             n > 40 ? 40 : n, *a ? a : b);
    return K->why;
}

static int ks_stat_fields(unsigned long long *out) {
    int rc = ks_read("stat", K->text, sizeof K->text);
    if (rc < 0)
        return rc;
    const char *p = strrchr(K->text, ')'); /* comm may hold anything but not after this */
    if (!p)
        return -EPROTO;
    p += 2;
    int field = 3, k = 0;
    while (*p && STAT_FIELDS[k]) {
        const char *q = p;
        int neg = *q == '-';
        if (neg)
            q++;
        unsigned long long v = dec_at(&q);
        if (field == STAT_FIELDS[k])
            out[k++] = neg ? (unsigned long long)-(long long)v : v;
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
        field++;
    }
    return STAT_FIELDS[k] ? -EPROTO : 0;
}

static int ks_namespaces(struct stat *ns, struct stat *root) {
    char path[96];
    for (int i = 0; NS_NAMES[i]; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)C->pid, NS_NAMES[i]);
        if (stat(path, &ns[i]) < 0)
            memset(&ns[i], 0, sizeof ns[i]); /* a namespace kind this kernel lacks */
    }
    snprintf(path, sizeof path, "/proc/%d/root", (int)C->pid);
    return stat(path, root) < 0 ? -errno : 0;
}

static int ks_sched(struct rw_sched_attr *a) {
    memset(a, 0, sizeof *a);
    return syscall(SYS_sched_getattr, C->pid, a, sizeof *a, 0) < 0 ? -errno : 0;
}

static int ks_robust(uint64_t *head, size_t *len) {
    void *h = NULL;
    return syscall(SYS_get_robust_list, C->pid, &h, len) < 0 ? -errno
                                                             : (*head = (uint64_t)(uintptr_t)h, 0);
}

static unsigned long ks_hex(const char *name) {
    if (ks_read(name, K->text, sizeof K->text) < 0)
        return ~0UL;
    const char *p = K->text;
    return (unsigned long)hex_at(&p);
}

/* Read one getter's value by injection; -errno when the call fails. */
static int ks_get(const struct kgetter *g, long *val) {
    long a[6] = {g->a1, g->a2, 0, 0, 0, 0}, ret;
    int zero = 0;
    if (g->ptr_at) {
        a[g->ptr_at - 1] = (long)C->scratch;
        if (poke(C->scratch, &zero, sizeof zero) < 0)
            return -EIO;
    }
    int rc = inject6(g->nr, a[0], a[1], a[2], a[3], a[4], a[5], &ret);
    if (rc < 0)
        return rc;
    if (ret < 0)
        return (int)ret;
    if (!g->ptr_at)
        return *val = ret, 0;
    int v;
    if (pread(C->mem_fd, &v, sizeof v, (off_t)C->scratch) != (ssize_t)sizeof v)
        return -EIO;
    *val = v;
    return 0;
}

static int ks_set(const struct kgetter *g, long val) {
    long a[6] = {g->s1, g->s2, 0, 0, 0, 0}, ret;
    if (!g->snr)
        return -EPERM;
    a[g->val_at - 1] = val;
    int rc = inject6(g->snr, a[0], a[1], a[2], a[3], a[4], a[5], &ret);
    return rc < 0 ? rc : (ret < 0 ? (int)ret : 0);
}

static int ks_itimer(int which, struct itimerval *out) {
    long ret = 0;
    int rc = inject(SYS_getitimer, which, (long)C->scratch, 0, 0, &ret);
    if (rc < 0 || ret < 0)
        return rc < 0 ? rc : (int)ret;
    return pread(C->mem_fd, out, sizeof *out, (off_t)C->scratch) == (ssize_t)sizeof *out ? 0
                                                                                         : -EIO;
}

static int ks_altstack(struct rw_altstack *out) {
    long ret = 0;
    int rc = inject(SYS_sigaltstack, 0, (long)C->scratch, 0, 0, &ret);
    if (rc < 0 || ret < 0)
        return rc < 0 ? rc : (int)ret;
    return pread(C->mem_fd, out, sizeof *out, (off_t)C->scratch) == (ssize_t)sizeof *out ? 0
                                                                                         : -EIO;
}

/* VmFlags of every mapping, in maps order, into out (which must hold nregions). The
 * layout equals the checkpoint's when this runs (after repair_maps). */
static const char *ks_vmflags(uint64_t *out) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)C->pid);
    if (read_file_into(path, C->maps_buf, MAPS_BUF, &C->maps_len) < 0)
        return "reading the worker's smaps failed";
    int i = -1;
    for (const char *p = C->maps_buf; *p;) {
        const char *eol = strchr(p, '\n');
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) {
            const char *q = p;
            uintptr_t start = (uintptr_t)hex_at(&q);
            if (*q == '-') {
                if (++i >= C->nregions || start != C->regions[i].start)
                    return "the worker's smaps do not match its mappings";
                out[i] = 0;
            }
        } else if (!strncmp(p, "VmFlags:", 8) && i >= 0) {
            for (const char *f = p + 8; f < (eol ? eol : f + strlen(f));) {
                while (*f == ' ')
                    f++;
                if (f[0] && f[1] && f[0] != '\n')
                    out[i] |= 1ULL << vmbit(f);
                while (*f && *f != ' ' && *f != '\n')
                    f++;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return i + 1 == C->nregions ? NULL : "the worker's smaps do not match its mappings";
}

/* The flags a request may add to a checkpoint mapping and the madvise that clears each
 * (for every mapping at once, in the fast path); sr/rr share MADV_NORMAL. */
static const struct {
    const char *code;
    int advice;
} UNDO[] = {{"wf", 19 /* MADV_KEEPONFORK */}, {"dc", MADV_DOFORK}, {"dd", 17 /* MADV_DODUMP */},
            {"sr", MADV_NORMAL},           {"rr", MADV_NORMAL}};
#define NUNDO ((int)(sizeof UNDO / sizeof UNDO[0]))

/* The fast path: clear what UNDO clears over every range, whatever the request did (a
 * few injected calls, against about 0.6 ms for reading smaps). 0 or a reason. */
static const char *ks_clear_vmflags(void) {
    long ret = 0;
    for (int u = 0; u < NUNDO; u++) {
        if (u > 0 && UNDO[u].advice == UNDO[u - 1].advice)
            continue;
        for (int i = 0; i < K->nmadv; i++)
            if (inject(SYS_madvise, (long)K->madv_start[i],
                       (long)(K->madv_end[i] - K->madv_start[i]), UNDO[u].advice, 0, &ret) < 0 ||
                (ret != 0 && ret != -ENOMEM))
                return "clearing the mappings' madvise flags failed";
    }
    return NULL;
}

/* Plan the fast path at the checkpoint: ranges between special mappings, and a trial
 * of every call (which must change nothing: no UNDO flag is set at the checkpoint). */
static void ks_plan_vmflags(void) {
    uint64_t any = 0;
    K->nmadv = 0;
    for (int i = 0; i < C->nregions; i++) {
        const struct region *r = &C->regions[i];
        if (r->special) /* [vvar] is dont-dump, for one: they are left alone */
            continue;
        any |= K->vmflags[i];
        if (K->nmadv && i > 0 && !C->regions[i - 1].special)
            K->madv_end[K->nmadv - 1] = r->end;
        else if (K->nmadv < 8) {
            K->madv_start[K->nmadv] = r->start;
            K->madv_end[K->nmadv++] = r->end;
        } else
            return;
    }
    for (int u = 0; u < NUNDO; u++)
        if (any & VMF(UNDO[u].code))
            return;
    K->madv_fast = ks_clear_vmflags() == NULL;
}

/* Record everything above; runs once in capture, before the backup is taken. */
static int kstate_capture(const char **what) {
    ks_release();
    void *p = mmap(NULL, sizeof(struct kstate), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return *what = "allocating the kernel-state record", -errno;
    madvise(p, sizeof(struct kstate), MADV_DONTFORK);
    K = p;
    int rc;
    if ((rc = ks_identity_text(K->id_text, sizeof K->id_text)) < 0 ||
        (rc = ks_stat_fields(K->stat_fields)) < 0 || (rc = ks_namespaces(K->ns, &K->root)) < 0)
        return *what = "reading the worker's identity", rc;
    K->has_rseq = ptrace(RW_PTRACE_GET_RSEQ_CONFIGURATION, C->pid, (void *)sizeof K->rseq,
                         &K->rseq) > 0;
    if (ks_read("ksm_stat", K->ksm, sizeof K->ksm) < 0)
        K->ksm[0] = 0;
    for (int r = 0; r < KS_NLIMITS; r++)
        if (prlimit(C->pid, r, NULL, &K->rl[r]) < 0)
            return *what = "reading the worker's rlimits", -errno;
    errno = 0;
    K->nice = getpriority(PRIO_PROCESS, (id_t)C->pid);
    if (errno || sched_getaffinity(C->pid, sizeof K->cpus, &K->cpus) < 0 ||
        ks_sched(&K->sched) < 0 ||
        (K->ioprio = (int)syscall(SYS_ioprio_get, 1, C->pid)) < 0)
        return *what = "reading the worker's scheduling", -errno;
    if ((rc = ks_read("oom_score_adj", K->oom, sizeof K->oom)) < 0 ||
        (rc = ks_read("coredump_filter", K->coredump, sizeof K->coredump)) < 0 ||
        (rc = ks_read("comm", K->comm, sizeof K->comm)) < 0)
        return *what = "reading the worker's /proc files", rc;
    if ((K->persona = ks_hex("personality")) == ~0UL)
        return *what = "reading the worker's personality", -EIO;
    char slack[32];
    K->slack_outside = ks_read("timerslack_ns", slack, sizeof slack) == 0;
    if (K->slack_outside) {
        const char *s = slack;
        K->slack = dec_at(&s);
    }
    if ((rc = ks_robust(&K->robust_head, &K->robust_len)) < 0)
        return *what = "reading the worker's robust-futex list", rc;
    /* Getters the kernel refuses here (no privilege, an older kernel) are skipped: the
     * request cannot use the setter either. */
    for (int i = 0; i <= NKGET; i++) {
        const struct kgetter *g = i < NKGET ? &KGET[i] : &KG_SLACK;
        K->has[i] = !(i == NKGET && K->slack_outside) && ks_get(g, &K->got[i]) == 0;
    }
    for (int w = 0; w < 3; w++)
        if ((rc = ks_itimer(w, &K->it[w])) < 0)
            return *what = "reading the worker's interval timers", rc;
    if ((rc = ks_altstack(&K->alt)) < 0)
        return *what = "reading the worker's sigaltstack", rc;
    const char *why = ks_vmflags(K->vmflags);
    memset(C->maps_buf, 0, C->maps_len + 1);
    if (why)
        return *what = why, -EPROTO;
    for (int i = 0; i < C->nregions; i++)
        if (K->vmflags[i] & (VMF("lo") | VMF("lf")))
            return *what = "the checkpoint holds locked memory (mlock)", -ENOTSUP;
    ks_plan_vmflags();
    ks_wipe();
    return 0;
}

/* Before any injected call: what only a new worker puts back. */
static const char *kstate_check_identity(void) {
    char now[KS_TEXT];
    const char *why = NULL;
    unsigned long long fields[16] = {0};
    struct stat ns[16], root;
    if (ks_identity_text(now, sizeof now) < 0)
        why = "reading the worker's status failed";
    else
        why = ks_identity_diff(K->id_text, now);
    if (!why) {
        struct rw_rseq_cfg rs;
        memset(&rs, 0, sizeof rs);
        if (K->has_rseq &&
            (ptrace(RW_PTRACE_GET_RSEQ_CONFIGURATION, C->pid, (void *)sizeof rs, &rs) <= 0 ||
             memcmp(&rs, &K->rseq, sizeof rs) != 0))
            why = "the request changed the worker's rseq registration";
    }
    if (!why && (ks_stat_fields(fields) < 0 ||
                 memcmp(fields, K->stat_fields, sizeof fields) != 0))
        why = "the request changed the worker's process group, session or mm fields (stat)";
    if (!why && (ks_namespaces(ns, &root) < 0 || root.st_dev != K->root.st_dev ||
                 root.st_ino != K->root.st_ino))
        why = "the request changed the worker's root directory";
    for (int i = 0; !why && NS_NAMES[i]; i++)
        if (ns[i].st_ino != K->ns[i].st_ino || ns[i].st_dev != K->ns[i].st_dev)
            why = "the request moved the worker to another namespace";
    if (!why && K->ksm[0] &&
        (ks_read("ksm_stat", K->text, sizeof K->text) < 0 ||
         strcmp(strstr(K->text, "ksm_merge_any") ? strstr(K->text, "ksm_merge_any") : "",
                strstr(K->ksm, "ksm_merge_any") ? strstr(K->ksm, "ksm_merge_any") : "") != 0))
        why = "the request changed the worker's KSM merging";
    memset(now, 0, sizeof now);
    ks_wipe();
    return why;
}

static int same_sched(const struct rw_sched_attr *a, const struct rw_sched_attr *b) {
    return a->policy == b->policy && a->flags == b->flags && a->priority == b->priority &&
           a->runtime == b->runtime && a->deadline == b->deadline && a->period == b->period &&
           a->util_min == b->util_min && a->util_max == b->util_max;
}

static int ks_text_is(const char *name, const char *want) {
    int rc = ks_read(name, K->text, sizeof K->text);
    int same = rc == 0 && strcmp(K->text, want) == 0;
    ks_wipe();
    return same;
}

/* Put back from the snapshot process what it can set itself; read it again. */
static const char *kstate_restore_outside(void) {
    for (int r = 0; r < KS_NLIMITS; r++) {
        struct rlimit now;
        if (prlimit(C->pid, r, NULL, &now) < 0)
            return "reading the worker's rlimits failed";
        if (now.rlim_cur == K->rl[r].rlim_cur && now.rlim_max == K->rl[r].rlim_max)
            continue;
        /* raising the hard limit back needs CAP_SYS_RESOURCE: the re-read says */
        prlimit(C->pid, r, &K->rl[r], NULL);
        if (prlimit(C->pid, r, NULL, &now) < 0 || now.rlim_cur != K->rl[r].rlim_cur ||
            now.rlim_max != K->rl[r].rlim_max)
            return "a resource limit could not be put back";
    }
    cpu_set_t cpus;
    if (sched_getaffinity(C->pid, sizeof cpus, &cpus) < 0)
        return "reading the worker's CPU affinity failed";
    if (!CPU_EQUAL(&cpus, &K->cpus) &&
        (sched_setaffinity(C->pid, sizeof K->cpus, &K->cpus) < 0 ||
         sched_getaffinity(C->pid, sizeof cpus, &cpus) < 0 || !CPU_EQUAL(&cpus, &K->cpus)))
        return "the CPU affinity could not be put back";
    struct rw_sched_attr sa;
    if (ks_sched(&sa) < 0)
        return "reading the worker's scheduling failed";
    if (!same_sched(&sa, &K->sched)) {
        struct rw_sched_attr want = K->sched;
        want.size = sizeof want;
        want.flags &= 1; /* SCHED_FLAG_RESET_ON_FORK; clamps are compared, not set */
        if (syscall(SYS_sched_setattr, C->pid, &want, 0) < 0 || ks_sched(&sa) < 0 ||
            !same_sched(&sa, &K->sched))
            return "the scheduling policy could not be put back";
    }
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)C->pid);
    if (errno)
        return "reading the worker's nice value failed";
    if (nice != K->nice) {
        /* lowering it needs CAP_SYS_NICE (or RLIMIT_NICE): the re-read says */
        setpriority(PRIO_PROCESS, (id_t)C->pid, K->nice);
        errno = 0;
        if (getpriority(PRIO_PROCESS, (id_t)C->pid) != K->nice || errno)
            return "the nice value could not be put back";
    }
    int io = (int)syscall(SYS_ioprio_get, 1, C->pid);
    if (io != K->ioprio && (syscall(SYS_ioprio_set, 1, C->pid, K->ioprio) < 0 ||
                            (int)syscall(SYS_ioprio_get, 1, C->pid) != K->ioprio))
        return "the I/O priority could not be put back";
    static const char *const files[] = {"oom_score_adj", "coredump_filter"};
    for (int i = 0; i < 2; i++) {
        const char *want = i ? K->coredump : K->oom;
        if (ks_text_is(files[i], want))
            continue;
        ks_write(files[i], want);
        if (!ks_text_is(files[i], want))
            return i ? "coredump_filter could not be put back"
                     : "oom_score_adj could not be put back";
    }
    if (K->slack_outside) {
        char want[32];
        snprintf(want, sizeof want, "%llu\n", K->slack);
        if (!ks_text_is("timerslack_ns", want)) {
            ks_write("timerslack_ns", want);
            if (!ks_text_is("timerslack_ns", want))
                return "the timer slack could not be put back";
        }
    }
    return NULL;
}

/* madvise calls that undo a flag a request added to a checkpoint mapping. */
static const char *ks_undo_vmflags(void) {
    uint64_t *now = (uint64_t *)(void *)C->found; /* scratch: C->found is free here */
    const char *why = ks_vmflags(now);
    int changed = 0;
    long ret;
    for (int i = 0; !why && i < C->nregions; i++) {
        uint64_t gained = now[i] & ~K->vmflags[i] & ~VMF("sd");
        if (K->vmflags[i] & ~now[i] & VMF("uw")) {
            why = "a tracked mapping lost its write tracking (userfaultfd)";
            break;
        }
        if (!gained && (K->vmflags[i] & ~now[i] & ~VMF("sd")) == 0)
            continue;
        changed = 1;
        for (int u = 0; u < NUNDO; u++)
            if ((gained & VMF(UNDO[u].code)) &&
                inject(SYS_madvise, (long)C->regions[i].start,
                       (long)(C->regions[i].end - C->regions[i].start), UNDO[u].advice, 0,
                       &ret) < 0)
                why = "restoring a mapping's flags failed";
    }
    if (!why && changed) {
        memset(C->maps_buf, 0, C->maps_len + 1);
        why = ks_vmflags(now);
        for (int i = 0; !why && i < C->nregions; i++)
            if ((now[i] ^ K->vmflags[i]) & ~VMF("sd"))
                why = "a mapping's flags (madvise, mlock: VmFlags) could not be put back";
    }
    memset(now, 0, sizeof(uint64_t) * (size_t)C->nregions);
    return why;
}

/* What only the worker can read or set: injected getters, setters, and re-reads. Runs
 * after kstate_check_identity, so no seccomp filter or dispatch range of the request's
 * can change what the calls do; its writes to the scratch page are copied back. */
static const char *kstate_restore_injected(void) {
    long ret;
    /* mlockall(MCL_FUTURE) leaves no trace until the next mapping: always undo it (the
     * checkpoint holds no locked memory; capture refuses one that does). */
    if (inject(SYS_munlockall, 0, 0, 0, 0, &ret) < 0 || ret != 0)
        return "munlockall in the worker failed";
    char want[32];
    if (!ks_text_is("comm", K->comm)) {
        memset(want, 0, sizeof want);
        size_t n = strcspn(K->comm, "\n");
        memcpy(want, K->comm, n < 15 ? n : 15);
        if (poke(C->scratch, want, 16) < 0 ||
            inject(SYS_prctl, PR_SET_NAME, (long)C->scratch, 0, 0, &ret) < 0 ||
            !ks_text_is("comm", K->comm))
            return "the process name (comm) could not be put back";
    }
    if (ks_hex("personality") != K->persona &&
        (inject(SYS_personality, (long)K->persona, 0, 0, 0, &ret) < 0 ||
         ks_hex("personality") != K->persona))
        return "the personality could not be put back";
    ks_wipe();
    uint64_t head = 0;
    size_t len = 0;
    if (ks_robust(&head, &len) < 0)
        return "reading the robust-futex list failed";
    if ((head != K->robust_head || len != K->robust_len) &&
        (inject(SYS_set_robust_list, (long)K->robust_head, (long)K->robust_len, 0, 0, &ret) < 0 ||
         ks_robust(&head, &len) < 0 || head != K->robust_head || len != K->robust_len))
        return "the robust-futex list could not be put back";
    for (int i = 0; i <= NKGET; i++) {
        const struct kgetter *g = i < NKGET ? &KGET[i] : &KG_SLACK;
        long v;
        if (!K->has[i])
            continue;
        if (ks_get(g, &v) < 0)
            return "reading a prctl setting failed";
        if (v == K->got[i])
            continue;
        if (ks_set(g, K->got[i]) < 0 || ks_get(g, &v) < 0 || v != K->got[i]) {
            snprintf(K->why, sizeof K->why, "%s could not be put back", g->what);
            return K->why;
        }
    }
    for (int w = 0; w < 3; w++) {
        struct itimerval it;
        if (ks_itimer(w, &it) < 0)
            return "reading an interval timer failed";
        /* Worker timers are never armed at the checkpoint (fork does not inherit them):
         * compare armed or not, not the time left. */
        int armed = it.it_value.tv_sec || it.it_value.tv_usec;
        if (!armed && !it.it_interval.tv_sec && !it.it_interval.tv_usec)
            continue;
        struct itimerval zero;
        memset(&zero, 0, sizeof zero);
        if (poke(C->scratch, &zero, sizeof zero) < 0 ||
            inject(SYS_setitimer, w, (long)C->scratch, 0, 0, &ret) < 0 || ks_itimer(w, &it) < 0 ||
            it.it_value.tv_sec || it.it_value.tv_usec || it.it_interval.tv_sec ||
            it.it_interval.tv_usec)
            return "an interval timer (setitimer) could not be disarmed";
    }
    struct rw_altstack alt;
    if (ks_altstack(&alt) < 0)
        return "reading the sigaltstack failed";
    if (memcmp(&alt, &K->alt, sizeof alt) != 0) {
        struct rw_altstack put = K->alt;
        put.flags &= ~SS_ONSTACK;
        if (poke(C->scratch, &put, sizeof put) < 0 ||
            inject(SYS_sigaltstack, (long)C->scratch, 0, 0, 0, &ret) < 0 ||
            ks_altstack(&alt) < 0 || memcmp(&alt, &K->alt, sizeof alt) != 0)
            return "the sigaltstack could not be put back";
    }
    return K->madv_fast ? ks_clear_vmflags() : ks_undo_vmflags();
}

/* After repair(): its injected calls' effects, read from outside. */
static const char *kstate_verify_repair(void) {
    struct pstatus st;
    if (read_status(C->pid, &st) < 0)
        return "reading the worker's status failed";
    if (st.umask != C->st.umask)
        return "the umask is not the checkpoint's after the repair";
    if (st.ign != C->st.ign || st.cgt != C->st.cgt || st.blk != C->st.blk)
        return "the signal dispositions or mask are not the checkpoint's after the repair";
    char buf[4096];
    if (ks_read("status", buf, sizeof buf) < 0 || dec_field(buf, "\nVmLck:") != 0) {
        memset(buf, 0, sizeof buf);
        return "the worker still holds locked memory after munlockall";
    }
    memset(buf, 0, sizeof buf);
    if (!P.nclose && !P.nsetfl)
        return NULL;
    struct saved_fd now[MAX_FDS];
    int n = read_fds(C->pid, now, MAX_FDS);
    if (n != C->nfds)
        return "the descriptors are not the checkpoint's after the repair";
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (int k = 0; k < C->nfds && !ok; k++)
            ok = C->fds[k].fd == now[i].fd && C->fds[k].dev == now[i].dev &&
                 C->fds[k].ino == now[i].ino && C->fds[k].flags == now[i].flags;
        if (!ok)
            return "the descriptors are not the checkpoint's after the repair";
    }
    return NULL;
}

#define IOV_BATCH 1024

static int flush_iov(struct iovec *local, struct iovec *remote, int n) {
    size_t want = 0;
    for (int i = 0; i < n; i++)
        want += remote[i].iov_len;
    ssize_t got = n ? process_vm_writev(C->pid, local, (unsigned long)n, remote,
                                        (unsigned long)n, 0)
                    : 0;
    return got == (ssize_t)want ? 0 : -EIO;
}

/* Copy back written and dropped pages (one process_vm_writev per 1,024 ranges), then,
 * when there are many, write-protect them again: copy first, or the copy would mark
 * them written. */
static const char *restore_memory(void) {
    static struct iovec local[IOV_BATCH], remote[IOV_BATCH];
    int n = 0;
    for (int i = 0; i < C->nfound; i++) {
        struct range *f = &C->found[i];
        for (uintptr_t a = f->start; a < f->end;) {
            int k = find_region(C->regions, C->nregions, a);
            if (k < 0)
                return "a found page left the checkpoint's mappings";
            const struct region *r = &C->regions[k];
            uintptr_t stop = r->end < f->end ? r->end : f->end;
            local[n].iov_base = C->backup + r->backup + (a - r->start);
            local[n].iov_len = stop - a;
            remote[n].iov_base = (void *)a;
            remote[n].iov_len = stop - a;
            C->pages += (stop - a) / (uintptr_t)page_size;
            if (++n == IOV_BATCH) {
                if (flush_iov(local, remote, n) < 0)
                    return "writing the worker's memory failed";
                n = 0;
            }
            a = stop;
        }
        C->ranges++;
    }
    if (flush_iov(local, remote, n) < 0)
        return "writing the worker's memory failed";
    /* An unprotected page is reported written at every scan, so it is copied back after
     * every request: leaving the pages requests write unprotected keeps their write
     * faults off the next request, at the price of copying them every time. */
    if (C->pages <= HOT_LIMIT_PAGES)
        return NULL;
    /* One protecting walk per unit that had pages restored. */
    for (int i = 0; i < C->nfound; i++) {
        if (i > 0 && C->found[i].unit == C->found[i - 1].unit)
            continue;
        const struct unit *u = &C->units[C->found[i].unit];
        if (protect(u->start, u->end) < 0)
            return "write-protecting restored pages failed";
    }
    return NULL;
}

static const char *scan_or_refuse(int writable) {
    int rc = scan_units(writable);
    if (rc == -EPERM)
        return "a tracked mapping was replaced";
    return rc < 0 ? "PAGEMAP_SCAN failed" : NULL;
}

/* ---- Python entry points ------------------------------------------------------------ */

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

static PyObject *py_probe(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    long ps = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return PyUnicode_FromFormat("mmap failed (%s)", strerror(errno));
    memset(mem, 1, (size_t)ps * 4);
    const char *why = NULL;
    int err = 0;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        munmap(mem, (size_t)ps * 4);
        return PyUnicode_FromFormat("pipe failed (%s)", strerror(errno));
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
    if (why)
        return PyUnicode_FromFormat("%s failed (%s)", why, strerror(err));
    Py_RETURN_NONE;
}

static PyObject *py_track(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    int fd = open_uffd();
    if (fd < 0)
        return os_error(-fd, "userfaultfd");
    int rc = register_all(fd, getpid());
    if (rc < 0) {
        close(fd);
        return os_error(-rc, "UFFDIO_REGISTER");
    }
    if ((rc = confine()) < 0) {
        close(fd);
        return os_error(-rc, "installing the seccomp filter (PR_SET_SECCOMP)");
    }
    return PyLong_FromLong(fd);
}

static PyObject *py_capture(PyObject *self, PyObject *args) {
    (void)self;
    int pid, gate_fd, uffd;
    if (!PyArg_ParseTuple(args, "iii", &pid, &gate_fd, &uffd))
        return NULL;
    double t0 = now_ms();
    int rc = alloc_state(pid);
    if (rc < 0)
        return os_error(-rc, "allocating the checkpoint");
    const char *what = NULL;
    C->worker_uffd = uffd;
    rc = capture_state(gate_fd, &what);
    if (rc == 0)
        rc = put_registers();
    if (rc == 0)
        rc = detach();
    wipe_scratch();
    if (rc < 0) {
        release();
        return os_error(-rc, what ? what : "resuming the worker");
    }
    int tracked = 0;
    for (int i = 0; i < C->nregions; i++)
        tracked += is_tracked(&C->regions[i]);
    return Py_BuildValue("{s:i,s:i,s:i,s:n,s:d}", "regions", C->nregions, "tracked", tracked,
                         "units", C->nunits, "backup_bytes", (Py_ssize_t)C->backup_len, "ms",
                         now_ms() - t0);
}

static PyObject *py_stop(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!C)
        return os_error(EINVAL, "stop() without a checkpoint");
    int rc = seize_stop(C->pid);
    if (rc < 0)
        return PyUnicode_FromFormat("the worker could not be stopped (%s)", strerror(-rc));
    struct pstatus st;
    if (read_status(C->pid, &st) < 0 || st.threads != 1)
        return PyUnicode_FromString("the request left threads");
    /* Its children die now; it reaps them in rewind(). Grandchildren re-parent to us. */
    pid_t kids[MAX_ZOMBIES];
    int n = read_children(C->pid, kids, MAX_ZOMBIES);
    if (n < 0 || n >= MAX_ZOMBIES)
        return PyUnicode_FromString("the request left too many children");
    for (int i = 0; i < n; i++) {
        kill(kids[i], SIGKILL);
        if (C->nzombies < MAX_ZOMBIES)
            C->zombies[C->nzombies++] = kids[i];
    }
    Py_RETURN_NONE;
}

static PyObject *py_rewind(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!C || !C->attached)
        return os_error(EINVAL, "rewind() of a worker that is not stopped");
    double t0 = now_ms();
    C->pages = C->ranges = C->injected = 0;
    /* Read again, not taken from stop(): until its children and the orphans died,
     * they could still signal the stopped worker. */
    struct pstatus st;
    /* Before anything is injected: a seccomp filter or dispatch range could make the
     * injected calls lie. */
    const char *why = kstate_check_identity();
    if (!why)
        why = read_status(C->pid, &st) < 0 ? "reading the worker's status failed"
                                           : check_kernel_state(&st);
    if (!why)
        why = kstate_restore_outside();
    if (!why)
        why = plan_maps();
    if (!why)
        why = plan_fds();
    double t1 = now_ms();
    /* Read-only memory first: injected calls run libc's syscall instruction, so code
     * must be known untouched before the worker executes anything. */
    if (!why)
        why = scan_or_refuse(0);
    if (!why)
        why = check_found();
    if (!why)
        why = repair_maps();
    if (!why) /* before the scan: what it writes to the scratch page is copied back */
        why = kstate_restore_injected();
    if (!why)
        why = scan_or_refuse(1);
    double t2 = now_ms();
    if (!why)
        why = repair(&st);
    if (!why)
        why = kstate_verify_repair();
    double t3 = now_ms();
    if (!why)
        why = restore_memory();
    double t4 = now_ms();
    C->t_check = t1 - t0;
    C->t_scan = t2 - t1;
    C->t_repair = t3 - t2;
    C->t_restore = t4 - t3;
    if (!why && (put_registers() < 0 || detach() < 0))
        why = "resuming the worker failed";
    wipe_scratch();
    if (why)
        return PyUnicode_FromString(why); /* the worker stays stopped: the caller kills it */
    C->last_ms = now_ms() - t0;
    return Py_BuildValue("{s:k,s:k,s:k,s:d,s:d,s:d,s:d,s:d}", "pages", C->pages, "ranges",
                         C->ranges, "injected", C->injected, "ms", C->last_ms, "check_ms",
                         C->t_check, "scan_ms", C->t_scan, "repair_ms", C->t_repair,
                         "restore_ms", C->t_restore);
}

static PyObject *py_exit_status(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!C || !C->gone)
        Py_RETURN_NONE;
    return PyLong_FromLong(C->exit_status);
}

static PyObject *py_release(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    release();
    Py_RETURN_NONE;
}

static PyObject *py_drain(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    /* Read whatever is in the worker's status pipe into a buffer that is wiped: the
     * action can write there, and this process keeps no request bytes. Returns the
     * first byte's meaning only. */
    char buf[4096];
    int first = -1;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    /* The worker is stopped: whatever it wrote is in the pipe now. poll() first keeps
     * the pipe blocking for the "started" record without a flag flip per request. */
    while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (first < 0)
            first = (unsigned char)buf[0];
    }
    memset(buf, 0, sizeof buf);
    __asm__ __volatile__("" : : "r"(buf) : "memory");
    if (first == 'D')
        return PyUnicode_FromString("done");
    if (first == 'X')
        return PyUnicode_FromString("exited");
    if (first < 0)
        return PyUnicode_FromString("none");
    return PyUnicode_FromString("other");
}

static PyMethodDef methods[] = {
    {"probe", py_probe, METH_NOARGS,
     "None when in-place rewind works here, else the reason it does not."},
    {"track", py_track, METH_NOARGS,
     "(worker) Register every private mapping for write tracking and forbid re-protecting "
     "pages (seccomp); returns the userfaultfd, which capture() takes away."},
    {"capture", py_capture, METH_VARARGS,
     "capture(pid, gate_fd, uffd): checkpoint the worker blocked reading gate_fd "
     "(descriptor numbers as in the worker)."},
    {"stop", py_stop, METH_NOARGS,
     "Stop the worker and kill its children; None, or why it cannot be rewound."},
    {"rewind", py_rewind, METH_NOARGS,
     "Rewind the stopped worker and let it go; figures, or why it could not be rewound."},
    {"exit_status", py_exit_status, METH_NOARGS,
     "The worker's wait status if stopping it found it dead (and reaped it), else None."},
    {"release", py_release, METH_NOARGS, "Forget the checkpoint (the worker is gone)."},
    {"drain", py_drain, METH_VARARGS,
     "drain(fd): empty the status pipe; 'done', 'exited', 'none' or 'other'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rewind.memory._inplace",
    "In-place rewind of a request process from its parent: ptrace, userfaultfd WP_ASYNC "
    "and PAGEMAP_SCAN.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__inplace(void) { return PyModule_Create(&module); }
