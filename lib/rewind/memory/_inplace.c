/*
 * rewind.memory._inplace: checkpoint a single-threaded process in place and rewind it.
 *
 * checkpoint() records the process state (descriptors, cwd, umask, signal dispositions
 * and mask, interval timers, brk, the mapping list), registers every tracked mapping
 * with a userfaultfd in WP_ASYNC mode, write-protects it, copies it to a backup kept in
 * memory the restorer owns (between guard pages), and saves the execution context.
 * It returns False; every later rewind() resumes it, and it then returns True.
 *
 * rewind() puts the process state back, reconciles the mapping list (reset brk, unmap
 * what is new, re-create what was removed), asks PAGEMAP_SCAN which tracked pages were
 * written (or dropped), copies them back from the backup, re-protects them and jumps
 * back into checkpoint(). The memory part runs on the restorer's own stack. A failure
 * before memory is touched raises OSError; a failure after it ends the process with
 * exit code 5 (fail closed): a half-restored process never runs Python code again.
 *
 * Only for x86-64/arm64 Linux >= 6.7 (WP_ASYNC, PAGEMAP_SCAN).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

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
#define MAX_FDS 1024
#define MAPS_BUF (4u << 20)
#define PATH_POOL (1u << 20)
#define SCAN_VEC 256 /* below ~512: walk_end is trustworthy, and we do not rely on it */
#define ALT_STACK (256u << 10)
#define KILL_SIG (SIGRTMAX - 1)
#define EXIT_FAIL_CLOSED 5

struct region {
    uintptr_t start, end;
    unsigned long long offset, inode;
    unsigned int dev_major, dev_minor;
    int prot;
    int shared;
    int tracked;  /* backed up and write-protected */
    int special;  /* [vvar], [vdso], [vsyscall]: never touched */
    int own;      /* the restorer's own memory */
    int stack;    /* [stack] */
    uint32_t path; /* offset into path_pool, 0 = anonymous */
    size_t backup; /* offset into the backup */
};

struct unit { /* a run of tracked regions with no untracked mapping between them */
    uintptr_t start, end;
};

struct saved_fd {
    int fd;
    int flags;
    int fdflags;
    int backup; /* a duplicate kept to put the descriptor back, or -1 */
    dev_t dev;
    ino_t ino;
};

struct state {
    /* recorded at checkpoint */
    struct region regions[MAX_REGIONS];
    int nregions;
    struct region cur[MAX_REGIONS];
    int ncur;
    struct unit units[MAX_UNITS];
    int nunits;
    char path_pool[PATH_POOL];
    uint32_t path_used;
    char cur_pool[PATH_POOL];
    uint32_t cur_used;
    struct saved_fd fds[MAX_FDS];
    int nfds;
    struct sigaction actions[_NSIG];
    sigset_t mask;
    struct itimerval timers[3];
    mode_t umask;
    int cwd_fd;
    int uffd;
    int pagemap_fd;
    uintptr_t brk;
    uint64_t features;
    char *backup;
    size_t backup_len, backup_map_len;
    uintptr_t own_start, own_end;   /* this block, guards included */
    uintptr_t bk_start, bk_end;     /* the backup, guards included */
    ucontext_t resume;              /* inside checkpoint(), on the main stack */
    ucontext_t worker;              /* the restorer on its own stack */
    volatile int resumed;
    int error;                      /* errno of a failure in the worker */
    const char *failed;             /* what failed in the worker */
    /* statistics of the last rewind */
    unsigned long pages_copied, ranges, recreated, unmapped;
    double last_ms;
    char maps_buf[MAPS_BUF];
    struct rw_page_region vec[SCAN_VEC];
    char alt_stack[ALT_STACK] __attribute__((aligned(64)));
};

static struct state *S; /* set once, before the snapshot; read-only afterwards */
static long page_size;

/* ---- small helpers that touch no tracked memory except the caller's stack ---------- */

static void die(const char *what, int err) {
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "rewind: in-place rewind failed after memory was modified (%s: %s); "
                     "exiting (fail closed)\n",
                     what, strerror(err));
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n);
        (void)w;
    }
    _exit(EXIT_FAIL_CLOSED);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

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

/* Parse /proc/self/maps into out[]; returns the count or -errno. */
static int parse_maps(struct region *out, char *pool, uint32_t *pool_used) {
    size_t len = 0;
    int rc = read_file_into("/proc/self/maps", S->maps_buf, MAPS_BUF, &len);
    if (rc < 0)
        return rc;
    int n = 0;
    *pool_used = 1;
    pool[0] = 0;
    const char *p = S->maps_buf, *end = S->maps_buf + len;
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
            r->special = !strcmp(nm, "[vvar]") || !strcmp(nm, "[vdso]") ||
                         !strcmp(nm, "[vsyscall]") || !strcmp(nm, "[vvar_vclock]");
            r->stack = !strcmp(nm, "[stack]");
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

static int uffd_register(uintptr_t start, uintptr_t end) {
    struct uffdio_register reg = {
        .range = {.start = start, .len = end - start},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    return ioctl(S->uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

static int uffd_protect(uintptr_t start, uintptr_t end) {
    struct uffdio_writeprotect wp = {
        .range = {.start = start, .len = end - start},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    return ioctl(S->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

static int is_tracked(const struct region *r) {
    if (r->special || r->own || !(r->prot & PROT_WRITE))
        return 0;
    if (!r->shared)
        return 1;
    /* Shared anonymous memory (mmap.mmap(-1, n)) is the process's own; shared files
     * belong to the file system and are left to the file rewind. */
    const char *nm = S->path_pool + r->path;
    return r->path && !strncmp(nm, "/dev/zero", 9);
}

/* ---- the restorer (runs on the alternate stack) ------------------------------------ */

static const struct region *find_ckpt(uintptr_t addr) {
    int lo = 0, hi = S->nregions - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const struct region *r = &S->regions[mid];
        if (addr < r->start)
            hi = mid - 1;
        else if (addr >= r->end)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

/* Re-create a checkpoint region that was removed or changed, with its content. */
static void recreate(const struct region *r) {
    size_t len = r->end - r->start;
    int flags = MAP_FIXED | (r->shared ? MAP_SHARED : MAP_PRIVATE);
    void *p;
    if (r->path && S->path_pool[r->path] == '/' && !r->shared) {
        int fd = open(S->path_pool + r->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die("reopening a removed file mapping", errno);
        p = mmap((void *)r->start, len, r->prot | PROT_WRITE, flags, fd, (off_t)r->offset);
        close(fd);
    } else {
        p = mmap((void *)r->start, len, r->prot | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
    }
    if (p == MAP_FAILED)
        die("re-creating a removed mapping", errno);
    if (r->tracked) {
        memcpy((void *)r->start, S->backup + r->backup, len);
        int rc = uffd_register(r->start, r->end);
        if (rc < 0)
            die("registering a re-created mapping", -rc);
        rc = uffd_protect(r->start, r->end);
        if (rc < 0)
            die("write-protecting a re-created mapping", -rc);
    }
    if (!(r->prot & PROT_WRITE) && mprotect((void *)r->start, len, r->prot) < 0)
        die("mprotect of a re-created mapping", errno);
    S->recreated++;
}

/* Make the mapping list equal to the checkpoint's. Returns 1 if anything changed. */
static int reconcile_maps(void) {
    int n = parse_maps(S->cur, S->cur_pool, &S->cur_used);
    if (n < 0)
        die("reading /proc/self/maps", -n);
    S->ncur = n;
    int changed = 0;
    /* 1. unmap every mapping that is not exactly a checkpoint mapping */
    int j = 0;
    for (int i = 0; i < n; i++) {
        const struct region *c = &S->cur[i];
        while (j < S->nregions && S->regions[j].end <= c->start)
            j++;
        if (j < S->nregions && same_region(c, S->cur_pool, &S->regions[j], S->path_pool))
            continue;
        if (c->special)
            die("a special mapping ([vdso]...) changed", EINVAL);
        if (c->start < S->own_end && c->end > S->own_start)
            die("the restorer's own memory was changed", EINVAL);
        if (c->start < S->bk_end && c->end > S->bk_start)
            die("the backup was changed", EINVAL);
        const struct region *k = j < S->nregions ? &S->regions[j] : NULL;
        if (c->stack && k && k->stack && c->end == k->end && c->start < k->start) {
            /* the stack grew below its checkpoint extent: drop the growth */
            if (munmap((void *)c->start, k->start - c->start) < 0)
                die("trimming the stack", errno);
        } else if (munmap((void *)c->start, c->end - c->start) < 0) {
            die("unmapping a new mapping", errno);
        }
        S->unmapped++;
        changed = 1;
    }
    if (!changed)
        return 0;
    /* 2. re-create every checkpoint mapping that is not there any more */
    n = parse_maps(S->cur, S->cur_pool, &S->cur_used);
    if (n < 0)
        die("reading /proc/self/maps", -n);
    j = 0;
    for (int i = 0; i < S->nregions; i++) {
        const struct region *k = &S->regions[i];
        while (j < n && S->cur[j].end <= k->start)
            j++;
        if (j < n && same_region(&S->cur[j], S->cur_pool, k, S->path_pool))
            continue;
        if (!k->tracked && !(k->prot == 0 && !k->path))
            die("a mapping without a backup was removed or changed", EINVAL);
        if (k->stack)
            die("the stack mapping was removed", EINVAL);
        recreate(k);
    }
    return 1;
}

/* Copy back one written range and re-protect it. */
static void restore_range(uintptr_t a, uintptr_t b) {
    uintptr_t from = a;
    while (a < b) {
        const struct region *r = find_ckpt(a);
        if (!r || !r->tracked)
            die("PAGEMAP_SCAN reported an untracked page", EFAULT);
        uintptr_t stop = b < r->end ? b : r->end;
        memcpy((void *)a, S->backup + r->backup + (a - r->start), stop - a);
        S->pages_copied += (stop - a) / (uintptr_t)page_size;
        a = stop;
    }
    (void)from;
    S->ranges++;
}

/* Re-protect every written page of [a, b) in one walk (after the copy-back). */
static void reprotect(uintptr_t a, uintptr_t b) {
    struct rw_pm_scan_arg arg = {
        .size = sizeof arg,
        .flags = RW_PM_SCAN_WP_MATCHING | RW_PM_SCAN_CHECK_WPASYNC,
        .start = a,
        .end = b,
        .category_mask = RW_PAGE_IS_WRITTEN,
        .return_mask = RW_PAGE_IS_WRITTEN,
    };
    if (ioctl(S->pagemap_fd, RW_PAGEMAP_SCAN, &arg) < 0)
        die("re-protecting restored pages", errno);
}

/* Scan one unit; returns 0, or -EPERM when a mapping in it is not registered. */
static int restore_unit(const struct unit *u) {
    uintptr_t pos = u->start;
    unsigned long before = S->ranges;
    while (pos < u->end) {
        struct rw_pm_scan_arg arg = {
            .size = sizeof arg,
            .flags = RW_PM_SCAN_CHECK_WPASYNC,
            .start = pos,
            .end = u->end,
            .vec = (uintptr_t)S->vec,
            .vec_len = SCAN_VEC,
            .category_inverted = RW_PAGE_IS_PRESENT,
            .category_mask = RW_PAGE_IS_WPALLOWED,
            /* written, or no longer present (dropped by MADV_DONTNEED and the like):
             * every tracked page was made present at the checkpoint */
            .category_anyof_mask = RW_PAGE_IS_WRITTEN | RW_PAGE_IS_PRESENT,
            .return_mask = RW_PAGE_IS_WRITTEN,
        };
        long got = ioctl(S->pagemap_fd, RW_PAGEMAP_SCAN, &arg);
        if (got < 0)
            return -errno;
        for (long i = 0; i < got; i++) {
            uintptr_t a = S->vec[i].start, b = S->vec[i].end;
            /* merge runs that touch */
            while (i + 1 < got && S->vec[i + 1].start == b)
                b = S->vec[++i].end;
            restore_range(a, b);
        }
        if (got < SCAN_VEC)
            break; /* the output buffer is not full: the walk is complete */
        pos = S->vec[got - 1].end;
    }
    if (S->ranges != before)
        reprotect(u->start, u->end);
    return 0;
}

/* Restore a unit region by region: the slow path when a mapping in it lost its
 * registration (it was unmapped and mapped again at the same place). */
static void restore_unit_by_region(const struct unit *u) {
    for (int i = 0; i < S->nregions; i++) {
        const struct region *r = &S->regions[i];
        if (!r->tracked || r->start < u->start || r->end > u->end)
            continue;
        struct unit one = {r->start, r->end};
        int rc = restore_unit(&one);
        if (rc == -EPERM) {
            if (munmap((void *)r->start, r->end - r->start) < 0)
                die("unmapping an unregistered mapping", errno);
            recreate(r);
        } else if (rc < 0) {
            die("PAGEMAP_SCAN", -rc);
        }
    }
}

enum { MODE_CHECKPOINT = 1, MODE_REWIND = 2 };
static int worker_mode;

static void worker_main(void) {
    if (worker_mode == MODE_CHECKPOINT) {
        /* Write-protect first, then copy: a page written after its protection is
         * reported, and restoring it from the copy gives the copy's content. */
        for (int i = 0; i < S->nunits; i++) {
            int rc = uffd_protect(S->units[i].start, S->units[i].end);
            if (rc < 0) {
                S->error = -rc;
                S->failed = "UFFDIO_WRITEPROTECT";
                setcontext(&S->resume);
            }
        }
        for (int i = 0; i < S->nregions; i++) {
            const struct region *r = &S->regions[i];
            if (r->tracked)
                memcpy(S->backup + r->backup, (void *)r->start, r->end - r->start);
        }
        setcontext(&S->resume);
    }
    double t0 = now_ms();
    S->pages_copied = S->ranges = S->recreated = S->unmapped = 0;
    reconcile_maps();
    for (int i = 0; i < S->nunits; i++) {
        int rc = restore_unit(&S->units[i]);
        if (rc == -EPERM)
            restore_unit_by_region(&S->units[i]);
        else if (rc < 0)
            die("PAGEMAP_SCAN", -rc);
    }
    S->last_ms = now_ms() - t0;
    S->resumed = 1;
    setcontext(&S->resume);
    die("setcontext", errno);
}

static int run_worker(int mode) {
    if (getcontext(&S->worker) < 0)
        return -errno;
    S->worker.uc_stack.ss_sp = S->alt_stack;
    S->worker.uc_stack.ss_size = sizeof S->alt_stack;
    S->worker.uc_link = NULL;
    sigfillset(&S->worker.uc_sigmask);
    makecontext(&S->worker, worker_main, 0);
    worker_mode = mode;
    return 0;
}

/* ---- process state outside memory --------------------------------------------------- */

static int list_fds(int *out, int cap) {
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
            int fd = atoi(d->d_name);
            if (fd == dfd)
                continue;
            if (n >= cap) {
                close(dfd);
                return -EMFILE;
            }
            out[n++] = fd;
        }
    }
    close(dfd);
    return n;
}

static int record_fds(void) {
    int fds[MAX_FDS];
    int n = list_fds(fds, MAX_FDS);
    if (n < 0)
        return n;
    S->nfds = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (fstat(fds[i], &st) < 0)
            continue;
        struct saved_fd *s = &S->fds[S->nfds++];
        s->fd = fds[i];
        s->flags = fcntl(fds[i], F_GETFL);
        s->fdflags = fcntl(fds[i], F_GETFD);
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->backup = -1;
    }
    /* Keep a duplicate of every descriptor but the restorer's own, so a request that
     * closes or replaces one (dup2 over stdin, say) cannot keep it from us. */
    int n0 = S->nfds;
    for (int i = 0; i < n0; i++) {
        struct saved_fd *s = &S->fds[i];
        if (s->fd == S->uffd || s->fd == S->pagemap_fd || s->fd == S->cwd_fd)
            continue;
        if (S->nfds >= MAX_FDS)
            return -EMFILE;
        int d = fcntl(s->fd, F_DUPFD_CLOEXEC, 512);
        if (d < 0)
            return -errno;
        s->backup = d;
        struct saved_fd *b = &S->fds[S->nfds++];
        *b = *s;
        b->fd = d;
        b->fdflags = FD_CLOEXEC;
        b->backup = -1;
    }
    return 0;
}

static const struct saved_fd *saved_fd(int fd) {
    for (int i = 0; i < S->nfds; i++)
        if (S->fds[i].fd == fd)
            return &S->fds[i];
    return NULL;
}

/* Put a checkpoint descriptor back if the request closed or replaced it. */
static int check_fd(const struct saved_fd *s, const char **what) {
    struct stat st;
    if (fstat(s->fd, &st) < 0 || st.st_dev != s->dev || st.st_ino != s->ino) {
        struct stat bst;
        if (s->backup < 0 || fstat(s->backup, &bst) < 0 || bst.st_dev != s->dev ||
            bst.st_ino != s->ino) {
            *what = "a descriptor open at the checkpoint was replaced";
            return -1;
        }
        if (dup3(s->backup, s->fd, s->fdflags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0) {
            *what = "putting back a descriptor";
            return -1;
        }
    }
    if (fcntl(s->fd, F_GETFL) != s->flags)
        fcntl(s->fd, F_SETFL, s->flags);
    if (fcntl(s->fd, F_GETFD) != s->fdflags)
        fcntl(s->fd, F_SETFD, s->fdflags);
    return 0;
}

/* Close what the request opened; checkpoint descriptors must still be themselves. */
static int restore_fds(const char **what) {
    int fds[MAX_FDS];
    int n = list_fds(fds, MAX_FDS);
    if (n < 0) {
        *what = "listing /proc/self/fd";
        return n;
    }
    for (int i = 0; i < n; i++) {
        const struct saved_fd *s = saved_fd(fds[i]);
        if (!s) {
            if (fds[i] > 3)
                close(fds[i]);
            continue;
        }
        if (check_fd(s, what) < 0)
            return -EBADF;
    }
    for (int i = 0; i < S->nfds; i++) {
        struct stat st;
        if (fstat(S->fds[i].fd, &st) < 0 && check_fd(&S->fds[i], what) < 0)
            return -EBADF;
    }
    return 0;
}

static int skip_signal(int sig) {
    return sig == SIGKILL || sig == SIGSTOP || (sig >= 32 && sig < SIGRTMIN);
}

static void thread_exit_handler(int sig) {
    (void)sig;
    syscall(SYS_exit, 0); /* ends this thread only */
}

/* ---- Python entry points ------------------------------------------------------------ */

static PyObject *os_error(int err, const char *what) {
    PyObject *v = Py_BuildValue("(is)", err, what);
    if (v) {
        PyErr_SetObject(PyExc_OSError, v);
        Py_DECREF(v);
    }
    return NULL;
}

static int open_uffd(uint64_t *features) {
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
    *features = api.features;
    return fd;
}

static PyObject *py_probe(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    uint64_t features;
    int fd = open_uffd(&features);
    if (fd < 0)
        return PyUnicode_FromFormat("userfaultfd with UFFD_FEATURE_WP_ASYNC is unavailable (%s)",
                                    strerror(-fd));
    long ps = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)ps * 4, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    const char *why = NULL;
    int err = 0;
    int pm = -1;
    if (mem == MAP_FAILED) {
        why = "mmap";
        err = errno;
        goto out_fd;
    }
    memset(mem, 1, (size_t)ps * 4);
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)mem, .len = (uint64_t)ps * 4},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)mem, .len = (uint64_t)ps * 4},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0 || ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0) {
        why = "UFFDIO_REGISTER/WRITEPROTECT in WP_ASYNC mode";
        err = errno;
        goto out_map;
    }
    mem[(size_t)ps * 2] = 2;
    pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm < 0) {
        why = "open /proc/self/pagemap";
        err = errno;
        goto out_map;
    }
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
    long got = ioctl(pm, RW_PAGEMAP_SCAN, &arg);
    if (got < 0) {
        why = "PAGEMAP_SCAN";
        err = errno;
    } else if (got != 1 || vec[0].start != (uintptr_t)mem + (uint64_t)ps * 2 ||
               vec[0].end != vec[0].start + (uint64_t)ps) {
        why = "PAGEMAP_SCAN did not report exactly the written page";
        err = EIO;
    }
    close(pm);
out_map:
    munmap(mem, (size_t)ps * 4);
out_fd:
    close(fd);
    if (why)
        return PyUnicode_FromFormat("%s failed (%s)", why, strerror(err));
    Py_RETURN_NONE;
}

static int count_tasks(void) {
    int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    char buf[4096];
    int n = 0;
    pid_t me = getpid();
    for (;;) {
        long got = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (got <= 0)
            break;
        for (long off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            pid_t tid = (pid_t)atoi(d->d_name);
            n++;
            if (tid != me)
                syscall(SYS_tgkill, me, tid, KILL_SIG);
        }
    }
    close(dfd);
    return n;
}

static PyObject *py_kill_threads(PyObject *self, PyObject *arg) {
    (void)self;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout < 0 && PyErr_Occurred())
        return NULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = thread_exit_handler;
    sigfillset(&sa.sa_mask);
    if (sigaction(KILL_SIG, &sa, NULL) < 0)
        return os_error(errno, "installing the thread-exit handler");
    double limit = now_ms() + timeout * 1000;
    int killed = 0;
    for (;;) {
        int n = count_tasks();
        if (n < 0)
            return os_error(-n, "listing /proc/self/task");
        if (n <= 1)
            break;
        killed = n - 1 > killed ? n - 1 : killed;
        if (now_ms() > limit)
            return os_error(EBUSY, "threads started by the request would not exit");
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return PyLong_FromLong(killed);
}

static int setup_state(void) {
    page_size = sysconf(_SC_PAGESIZE);
    size_t len = (sizeof(struct state) + (size_t)page_size - 1) & ~((size_t)page_size - 1);
    size_t total = len + 2 * (size_t)page_size;
    char *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return -errno;
    if (mprotect(base + page_size, len, PROT_READ | PROT_WRITE) < 0) {
        int e = errno;
        munmap(base, total);
        return -e;
    }
    S = (struct state *)(base + page_size);
    S->own_start = (uintptr_t)base;
    S->own_end = (uintptr_t)base + total;
    S->uffd = S->pagemap_fd = S->cwd_fd = -1;
    return 0;
}

static int tracked_size(struct region *rs, int n, size_t *out) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        struct region *r = &rs[i];
        r->own = (r->start < S->own_end && r->end > S->own_start) ||
                 (r->start < S->bk_end && r->end > S->bk_start);
        r->tracked = is_tracked(r);
        if (r->tracked) {
            r->backup = total;
            total += r->end - r->start;
        }
    }
    *out = total;
    return 0;
}

static PyObject *py_checkpoint(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    const char *what = NULL;
    int rc;
    if (S) {
        PyErr_SetString(PyExc_RuntimeError, "checkpoint() can be taken only once");
        return NULL;
    }
    if ((rc = setup_state()) < 0)
        return os_error(-rc, "allocating the restorer's memory");
    uint64_t features;
    if ((rc = open_uffd(&features)) < 0) {
        what = "userfaultfd";
        goto fail;
    }
    S->uffd = rc;
    S->features = features;
    S->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    S->cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (S->pagemap_fd < 0 || S->cwd_fd < 0) {
        rc = -errno;
        what = "opening /proc/self/pagemap or the cwd";
        goto fail;
    }
    S->umask = umask(0);
    umask(S->umask);
    for (int sig = 1; sig < _NSIG; sig++)
        if (!skip_signal(sig) && sigaction(sig, NULL, &S->actions[sig]) < 0) {
            rc = -errno;
            what = "sigaction";
            goto fail;
        }
    for (int t = 0; t < 3; t++)
        getitimer(t, &S->timers[t]);
    S->brk = (uintptr_t)syscall(SYS_brk, 0);
    /* Allocate the backup: size it from the current mappings, with room to spare. */
    int n = parse_maps(S->regions, S->path_pool, &S->path_used);
    if (n < 0) {
        rc = n;
        what = "reading /proc/self/maps";
        goto fail;
    }
    size_t need;
    tracked_size(S->regions, n, &need);
    S->backup_len = need + (size_t)page_size * 64;
    S->backup_map_len = S->backup_len + 2 * (size_t)page_size;
    char *bk = mmap(NULL, S->backup_map_len, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (bk == MAP_FAILED || mprotect(bk + page_size, S->backup_len, PROT_READ | PROT_WRITE) < 0) {
        rc = -errno;
        what = "allocating the backup";
        goto fail;
    }
    S->backup = bk + page_size;
    S->bk_start = (uintptr_t)bk;
    S->bk_end = (uintptr_t)bk + S->backup_map_len;
    /* Register every tracked mapping, then read the list again: registration may merge
     * neighbours, and the list compared at every rewind is the registered one. */
    n = parse_maps(S->regions, S->path_pool, &S->path_used);
    if (n < 0) {
        rc = n;
        what = "reading /proc/self/maps";
        goto fail;
    }
    tracked_size(S->regions, n, &need);
    for (int i = 0; i < n; i++)
        if (S->regions[i].tracked && (rc = uffd_register(S->regions[i].start,
                                                          S->regions[i].end)) < 0) {
            what = "UFFDIO_REGISTER";
            goto fail;
        }
    n = parse_maps(S->regions, S->path_pool, &S->path_used);
    if (n < 0) {
        rc = n;
        what = "reading /proc/self/maps";
        goto fail;
    }
    S->nregions = n;
    tracked_size(S->regions, n, &need);
    if (need > S->backup_len) {
        rc = -ENOMEM;
        what = "the mappings grew while the checkpoint was taken";
        goto fail;
    }
    S->nunits = 0;
    for (int i = 0; i < n; i++) {
        if (!S->regions[i].tracked)
            continue;
        if (i > 0 && S->regions[i - 1].tracked && S->nunits)
            S->units[S->nunits - 1].end = S->regions[i].end;
        else {
            if (S->nunits >= MAX_UNITS) {
                rc = -E2BIG;
                what = "too many mappings";
                goto fail;
            }
            S->units[S->nunits].start = S->regions[i].start;
            S->units[S->nunits++].end = S->regions[i].end;
        }
    }
    if ((rc = record_fds()) < 0) {
        what = "listing descriptors";
        goto fail;
    }
    if (sigprocmask(SIG_SETMASK, NULL, &S->mask) < 0) {
        rc = -errno;
        what = "sigprocmask";
        goto fail;
    }
    /* Snapshot on the restorer's stack; rewind() comes back here too. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if ((rc = run_worker(MODE_CHECKPOINT)) < 0) {
        what = "makecontext";
        goto fail;
    }
    S->resumed = 0;
    S->error = 0;
    if (swapcontext(&S->resume, &S->worker) < 0) {
        rc = -errno;
        what = "swapcontext";
        goto fail;
    }
    /* Both the first pass and every rewind arrive here, with the checkpoint's mask. */
    sigprocmask(SIG_SETMASK, &S->mask, NULL);
    if (S->resumed)
        Py_RETURN_TRUE;
    if (S->error) {
        rc = -S->error;
        what = S->failed;
        goto fail;
    }
    Py_RETURN_FALSE;
fail:
    return os_error(-rc, what ? what : "checkpoint");
}

static PyObject *py_rewind(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!S || S->backup == NULL)
        return os_error(EINVAL, "rewind() without a checkpoint");
    const char *what = NULL;
    int rc = restore_fds(&what);
    if (rc < 0)
        return os_error(-rc, what);
    if (fchdir(S->cwd_fd) < 0)
        return os_error(errno, "restoring the cwd");
    umask(S->umask);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < _NSIG; sig++)
        if (!skip_signal(sig) && sigaction(sig, &S->actions[sig], NULL) < 0)
            return os_error(errno, "restoring a signal disposition");
    for (int t = 0; t < 3; t++)
        if (setitimer(t, &S->timers[t], NULL) < 0)
            return os_error(errno, "restoring an interval timer");
    /* From here on memory changes: any failure ends the process. */
    uintptr_t got = (uintptr_t)syscall(SYS_brk, S->brk);
    if (got != S->brk)
        die("resetting brk", ENOMEM);
    if (run_worker(MODE_REWIND) < 0)
        die("makecontext", errno);
    ucontext_t here;
    swapcontext(&here, &S->worker);
    die("the rewind returned", EINVAL);
    return NULL;
}

static PyObject *py_stats(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!S)
        Py_RETURN_NONE;
    int tracked = 0;
    for (int i = 0; i < S->nregions; i++)
        tracked += S->regions[i].tracked;
    return Py_BuildValue("{s:k,s:k,s:k,s:k,s:d,s:i,s:i,s:i,s:n}", "pages_copied",
                         S->pages_copied, "ranges", S->ranges, "recreated", S->recreated,
                         "unmapped", S->unmapped, "last_ms", S->last_ms, "regions",
                         S->nregions, "tracked", tracked, "units", S->nunits,
                         "backup_bytes", (Py_ssize_t)S->backup_len);
}

static PyMethodDef methods[] = {
    {"probe", py_probe, METH_NOARGS,
     "None when in-place rewind works here, else the reason it does not."},
    {"checkpoint", py_checkpoint, METH_NOARGS,
     "Take the checkpoint; False now, True each time rewind() comes back here."},
    {"rewind", py_rewind, METH_NOARGS,
     "Return to the checkpoint (does not return; OSError if it cannot start)."},
    {"kill_threads", py_kill_threads, METH_O,
     "End every thread but the caller within timeout seconds; return how many."},
    {"stats", py_stats, METH_NOARGS, "Figures of the checkpoint and the last rewind."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rewind.memory._inplace",
    "In-place checkpoint and rewind with userfaultfd WP_ASYNC and PAGEMAP_SCAN.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__inplace(void) { return PyModule_Create(&module); }
