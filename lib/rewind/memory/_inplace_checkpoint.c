/*
 * A checkpoint's life: capture (seize the worker at its gate, save registers, process
 * state and a backup of its writable memory, write-protect it), stop (before the reply)
 * and rewind (after it): the steps of the other files, in order. Runs in the snapshot
 * process.
 */
#include "_inplace.h"

long page_size;

/* Forget what the last pass read from /proc: it can hold names the request chose. */
static void wipe_scratch(struct ckpt *c) {
    memset(c->maps_buf, 0, c->maps_len + 1);
    memset(c->cur_pool, 0, c->cur_used);
    memset(c->cur, 0, sizeof(struct region) * (size_t)c->ncur);
    memset(c->found, 0, sizeof(struct range) * (size_t)c->nfound);
    c->maps_len = c->cur_used = 0;
    c->ncur = c->nfound = 0;
}

/* Free a checkpoint and everything it holds (the worker is gone or being replaced). */
void ckpt_free(struct ckpt *c) {
    if (!c)
        return;
    if (c->attached)
        detach(c);
    if (c->mem_fd >= 0)
        close(c->mem_fd);
    if (c->pagemap_fd >= 0)
        close(c->pagemap_fd);
    if (c->uffd >= 0)
        close(c->uffd);
    if (c->backup)
        munmap(c->backup, c->backup_len);
    ks_release(c);
    munmap(c, sizeof *c);
}

/* An empty checkpoint of worker pid, or NULL with errno set. Its own mapping: the
 * scratch is large, and later workers must not inherit it (MADV_DONTFORK). */
static struct ckpt *ckpt_new(pid_t pid) {
    page_size = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, sizeof(struct ckpt), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, sizeof(struct ckpt), MADV_DONTFORK);
    struct ckpt *c = p;
    c->pid = pid;
    c->mem_fd = c->pagemap_fd = c->uffd = -1;
    return c;
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
static int stop_at_gate(struct ckpt *c, int gate_fd, struct user_regs_struct *regs) {
    int rc = seize_stop(c, c->pid);
    double limit = now_ms() + 10000;
    while (rc == 0) {
        if (ptrace(PTRACE_GETREGS, c->pid, 0, regs) < 0)
            return -errno;
        long err = -(long)regs->rax;
        if (regs->orig_rax == SYS_read && regs->rdi == (unsigned long long)gate_fd &&
            (err == ERESTARTSYS_ || err == ERESTARTNOINTR_ || err == ERESTARTNOHAND_))
            return 0;
        if (now_ms() > limit)
            return -ETIMEDOUT;
        if (ptrace(PTRACE_CONT, c->pid, 0, 0) < 0)
            return -errno;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        if (ptrace(PTRACE_INTERRUPT, c->pid, 0, 0) < 0)
            return -errno;
        int status;
        rc = wait_stop(c, &status);
    }
    return rc;
}

/* Stop the worker at its gate; save its registers, FPU state and /proc/PID/mem. */
static int capture_registers(struct ckpt *c, int gate_fd, const char **what) {
    struct user_regs_struct regs;
    int rc;
    char path[64];
    if ((rc = stop_at_gate(c, gate_fd, &regs)) < 0)
        return *what = "stopping the worker at its gate", rc;
    /* Resuming means executing read(gate) again: back up over the syscall instruction. */
    c->resume = regs;
    c->resume.rip -= 2;
    c->resume.rax = regs.orig_rax;
    c->resume.orig_rax = (unsigned long long)-1;
    struct iovec iov = {c->xstate, sizeof c->xstate};
    if (ptrace(PTRACE_GETREGSET, c->pid, (void *)NT_X86_XSTATE, &iov) < 0)
        return *what = "reading the FPU state", -errno;
    c->xstate_len = iov.iov_len;
    snprintf(path, sizeof path, "/proc/%d/mem", (int)c->pid);
    c->mem_fd = open(path, O_RDWR | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)c->pid);
    c->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c->mem_fd < 0 || c->pagemap_fd < 0)
        return *what = "opening the worker's mem and pagemap", -errno;
    unsigned char insn[2];
    if (pread(c->mem_fd, insn, 2, (off_t)c->resume.rip) != 2 || insn[0] != 0x0f || insn[1] != 0x05)
        return *what = "finding the checkpoint's syscall instruction", -EPROTO;
    return 0;
}

/* Take the worker's userfaultfd and close it in the worker: only we can re-register
 * memory, and the worker has nothing to re-protect pages with. */
static int take_uffd(struct ckpt *c, const char **what) {
    int rc;
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    int dup = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, c->worker_uffd, 0);
    int err = errno;
    if (pidfd >= 0)
        close(pidfd);
    if (dup < 0)
        return *what = "taking the worker's userfaultfd (pidfd_getfd)", -err;
    long closed;
    c->uffd = dup;
    if ((rc = inject(c, SYS_close, c->worker_uffd, 0, 0, 0, &closed)) < 0 || closed != 0)
        return *what = "closing the worker's userfaultfd", rc < 0 ? rc : -EBADF;
    return 0;
}

/* Status, descriptors, cwd and mappings; the scratch page low in the stack. */
static int capture_process(struct ckpt *c, const char **what) {
    int rc;
    char path[64];
    if ((rc = read_status(c->pid, &c->st)) < 0)
        return *what = "reading the worker's status", rc;
    if (c->st.threads != 1)
        return *what = "the worker has more than one thread", -EBUSY;
    if ((rc = read_fds(c->pid, c->fds, MAX_FDS)) < 0)
        return *what = "listing the worker's descriptors", rc;
    c->nfds = rc;
    struct stat cst;
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)c->pid);
    if (stat(path, &cst) < 0)
        return *what = "reading the worker's cwd", -errno;
    c->cwd_dev = cst.st_dev;
    c->cwd_ino = cst.st_ino;
    int n = parse_maps(c, c->pid, c->regions, c->pool, &c->pool_used);
    if (n < 0)
        return *what = "reading the worker's maps", n;
    c->nregions = n;
    /* Scratch for injected calls: the lowest page of the stack, far below its use. */
    for (int i = 0; i < n; i++) {
        struct region *r = &c->regions[i];
        if (r->stack) {
            c->stack_start = r->start;
            if (c->resume.rsp - r->start < (uintptr_t)page_size * 2)
                return *what = "the stack has no room below the checkpoint", -ENOSPC;
            c->scratch = r->start;
        }
        if (r->heap)
            c->heap_end = r->end;
        if (r->shared && (r->prot & PROT_WRITE))
            return *what = "a shared writable mapping cannot be rewound", -ENOTSUP;
    }
    if (!c->scratch)
        return *what = "the worker has no [stack] mapping", -ENOENT;
    return 0;
}

/* Signal dispositions the checkpoint catches (read through the scratch page), brk. */
static int capture_signals_and_brk(struct ckpt *c, const char **what) {
    int rc;
    for (int sig = 1; sig <= MAX_SIG; sig++) {
        struct kact *a = &c->acts[sig];
        memset(a, 0, sizeof *a);
        uint64_t bit = 1ULL << (sig - 1);
        if (c->st.ign & bit)
            a->handler = (uint64_t)(uintptr_t)SIG_IGN;
        if (!(c->st.cgt & bit))
            continue;
        long ret;
        if ((rc = inject(c, SYS_rt_sigaction, sig, 0, (long)c->scratch, 8, &ret)) < 0 || ret < 0)
            return *what = "reading a signal disposition", rc < 0 ? rc : (int)ret;
        if (pread(c->mem_fd, a, sizeof *a, (off_t)c->scratch) != (ssize_t)sizeof *a)
            return *what = "reading a signal disposition", -EIO;
    }
    long brk_now;
    if ((rc = inject(c, SYS_brk, 0, 0, 0, 0, &brk_now)) < 0)
        return *what = "reading brk", rc;
    c->brk = (uintptr_t)brk_now;
    return 0;
}

/* Back up every writable private mapping; reading also makes each page present,
 * so a page that is missing later was dropped during a request. */
static int take_backup(struct ckpt *c, const char **what) {
    int n = c->nregions;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        struct region *r = &c->regions[i];
        if (is_tracked(r) && (r->prot & PROT_WRITE)) {
            r->backup = total;
            total += r->end - r->start;
        }
        if (r->special && r->path && !strcmp(c->pool + r->path, "[vdso]")) {
            c->vdso_start = r->start;
            c->vdso_len = r->end - r->start;
        }
    }
    c->backup_len = total ? total : (size_t)page_size;
    c->backup = mmap(NULL, c->backup_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c->backup == MAP_FAILED) {
        c->backup = NULL;
        return *what = "allocating the backup", -ENOMEM;
    }
    madvise(c->backup, c->backup_len, MADV_DONTFORK);
    for (int i = 0; i < n; i++) {
        struct region *r = &c->regions[i];
        size_t len = r->end - r->start;
        if (!is_tracked(r) || !(r->prot & PROT_WRITE))
            continue;
        if (pread(c->mem_fd, c->backup + r->backup, len, (off_t)r->start) != (ssize_t)len)
            return *what = "copying the worker's memory", -EIO;
        drop_zero_pages(c->backup + r->backup, len);
    }
    if (c->vdso_len > sizeof c->vdso ||
        (c->vdso_len &&
         pread(c->mem_fd, c->vdso, c->vdso_len, (off_t)c->vdso_start) != (ssize_t)c->vdso_len))
        return *what = "reading the vdso", -EIO;
    return 0;
}

/* Units: runs of adjacent tracked regions, scanned with one call each; all of them
 * write-protected, so PAGEMAP_SCAN reports what a request writes. */
static int protect_units(struct ckpt *c, const char **what) {
    int rc, n = c->nregions;
    c->nunits = 0;
    for (int i = 0; i < n; i++) {
        struct region *r = &c->regions[i];
        if (!is_tracked(r))
            continue;
        int writable = (r->prot & PROT_WRITE) != 0;
        if (c->nunits && c->units[c->nunits - 1].end == r->start && i > 0 &&
            is_tracked(&c->regions[i - 1]) && c->units[c->nunits - 1].writable == writable)
            c->units[c->nunits - 1].end = r->end;
        else {
            if (c->nunits >= MAX_UNITS)
                return *what = "too many mappings", -E2BIG;
            c->units[c->nunits].start = r->start;
            c->units[c->nunits].end = r->end;
            c->units[c->nunits++].writable = writable;
        }
    }
    for (int i = 0; i < c->nunits; i++)
        if ((rc = protect(c, c->units[i].start, c->units[i].end)) < 0)
            return *what = "write-protecting the worker (is every mapping tracked?)", rc;
    return 0;
}

/* The checkpoint, step by step; on failure *what names the step. */
static int capture_state(struct ckpt *c, int gate_fd, const char **what) {
    int rc;
    if ((rc = capture_registers(c, gate_fd, what)) < 0 || (rc = take_uffd(c, what)) < 0 ||
        (rc = capture_process(c, what)) < 0 || (rc = capture_signals_and_brk(c, what)) < 0 ||
        (rc = kstate_capture(c, what)) < 0 || (rc = take_backup(c, what)) < 0 ||
        (rc = protect_units(c, what)) < 0)
        return rc;
    return 0;
}

/* Checkpoint worker pid, blocked reading gate_fd (its userfaultfd is worker_uffd, both
 * numbers as in the worker), and let it go. 0 and *out, or -errno and *what. */
int ckpt_capture(pid_t pid, int gate_fd, int worker_uffd, struct ckpt **out, const char **what) {
    struct ckpt *c = ckpt_new(pid);
    if (!c)
        return *what = "allocating the checkpoint", -errno;
    c->worker_uffd = worker_uffd;
    int rc = capture_state(c, gate_fd, what);
    if (rc == 0)
        rc = put_registers(c);
    if (rc == 0)
        rc = detach(c);
    wipe_scratch(c);
    if (rc < 0) {
        if (!*what)
            *what = "resuming the worker";
        ckpt_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* After a request, before the reply: stop the worker, refuse threads, kill its
 * children (rewind reaps them; grandchildren re-parent to the caller). NULL, or why
 * the worker must be replaced. */
const char *ckpt_stop(struct ckpt *c) {
    int rc = seize_stop(c, c->pid);
    if (rc < 0) {
        snprintf(c->reason, sizeof c->reason, "the worker could not be stopped (%s)",
                 strerror(-rc));
        return c->reason;
    }
    struct pstatus st;
    if (read_status(c->pid, &st) < 0 || st.threads != 1)
        return "the request left threads";
    pid_t kids[MAX_ZOMBIES];
    int n = read_children(c->pid, kids, MAX_ZOMBIES);
    if (n < 0 || n >= MAX_ZOMBIES)
        return "the request left too many children";
    for (int i = 0; i < n; i++) {
        kill(kids[i], SIGKILL);
        if (c->nzombies < MAX_ZOMBIES)
            c->zombies[c->nzombies++] = kids[i];
    }
    return NULL;
}

/* Checks and plans; nothing is injected yet. */
static const char *rewind_check(struct ckpt *c, struct pstatus *st) {
    /* Before anything is injected: a seccomp filter or dispatch range could make the
     * injected calls lie. */
    const char *why = kstate_check_identity(c);
    /* Read again, not taken from stop(): until its children and the orphans died,
     * they could still signal the stopped worker. */
    if (!why)
        why = read_status(c->pid, st) < 0 ? "reading the worker's status failed"
                                          : check_kernel_state(c, st);
    if (!why)
        why = kstate_restore_outside(c);
    if (!why)
        why = plan_maps(c);
    if (!why)
        why = plan_fds(c);
    return why;
}

/* Scans and the injected repairs of mappings and kernel state. */
static const char *rewind_scan(struct ckpt *c) {
    /* Read-only memory first: injected calls run libc's syscall instruction, so code
     * must be known untouched before the worker executes anything. */
    const char *why = scan_or_refuse(c, 0);
    if (!why)
        why = check_found(c);
    if (!why)
        why = repair_maps(c);
    if (!why) /* before the scan: what it writes to the scratch page is copied back */
        why = kstate_restore_injected(c);
    if (!why)
        why = scan_or_refuse(c, 1);
    return why;
}

/* After the reply: put the stopped worker back to the checkpoint and let it go. NULL
 * (the figures are in c), or why it could not be: the worker stays stopped, and the
 * caller kills it. */
const char *ckpt_rewind(struct ckpt *c) {
    double t0 = now_ms();
    c->pages = c->ranges = c->injected = 0;
    struct pstatus st;
    const char *why = rewind_check(c, &st);
    double t1 = now_ms();
    if (!why)
        why = rewind_scan(c);
    double t2 = now_ms();
    if (!why)
        why = repair(c, &st);
    if (!why)
        why = kstate_verify_repair(c);
    double t3 = now_ms();
    if (!why)
        why = restore_memory(c);
    double t4 = now_ms();
    c->t_check = t1 - t0;
    c->t_scan = t2 - t1;
    c->t_repair = t3 - t2;
    c->t_restore = t4 - t3;
    if (!why && (put_registers(c) < 0 || detach(c) < 0))
        why = "resuming the worker failed";
    wipe_scratch(c);
    c->last_ms = now_ms() - t0;
    return why;
}

/* The number of tracked regions (the capture's figures). */
int ckpt_tracked(const struct ckpt *c) {
    int tracked = 0;
    for (int i = 0; i < c->nregions; i++)
        tracked += is_tracked(&c->regions[i]);
    return tracked;
}
