/*
 * ptrace on the worker: stopping it, making it execute system calls at the
 * checkpoint's syscall instruction (inject), putting its registers back, and the
 * repairs that are made that way (mappings, brk, descriptors, signals, umask, zombies).
 * Runs in the snapshot process, which is the worker's only tracer.
 */
#include "_inplace.h"

/* Wait for the next ptrace stop of the worker; -ESRCH when it is gone. */
int wait_stop(struct ckpt *c, int *status) {
    for (;;) {
        pid_t got = waitpid(c->pid, status, __WALL);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -errno;
        if (WIFSTOPPED(*status))
            return 0;
        c->gone = 1;
        c->exit_status = *status;
        return -ESRCH; /* exited or killed */
    }
}

int seize_stop(struct ckpt *c, pid_t pid) {
    if (ptrace(PTRACE_SEIZE, pid, 0, (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) < 0)
        return -errno;
    c->attached = 1;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0)
        return -errno;
    int status;
    return wait_stop(c, &status);
}

int detach(struct ckpt *c) {
    if (!c->attached)
        return 0;
    c->attached = 0;
    return ptrace(PTRACE_DETACH, c->pid, 0, 0) < 0 ? -errno : 0;
}

/* Resume the stopped worker with PTRACE_SYSCALL until its next syscall stop; signal
 * stops on the way (a SIGCHLD from a killed child, say) are swallowed. */
static int next_syscall_stop(struct ckpt *c) {
    for (int tries = 0; tries < 64; tries++) {
        if (ptrace(PTRACE_SYSCALL, c->pid, 0, 0) < 0)
            return -errno;
        int status;
        int rc = wait_stop(c, &status);
        if (rc < 0)
            return rc;
        if (WSTOPSIG(status) == (SIGTRAP | 0x80))
            return 0;
    }
    return -EPROTO;
}

/* Make the worker run one system call at the checkpoint's syscall instruction. */
int inject6(struct ckpt *c, long nr, long a1, long a2, long a3, long a4, long a5, long a6,
            long *ret) {
    struct user_regs_struct r = c->resume;
    r.rax = (unsigned long long)nr;
    r.orig_rax = (unsigned long long)-1;
    r.rdi = (unsigned long long)a1;
    r.rsi = (unsigned long long)a2;
    r.rdx = (unsigned long long)a3;
    r.r10 = (unsigned long long)a4;
    r.r8 = (unsigned long long)a5;
    r.r9 = (unsigned long long)a6;
    if (ptrace(PTRACE_SETREGS, c->pid, 0, &r) < 0)
        return -errno;
    int rc = next_syscall_stop(c); /* entry */
    if (rc == 0)
        rc = next_syscall_stop(c); /* exit */
    if (rc < 0)
        return rc;
    if (ptrace(PTRACE_GETREGS, c->pid, 0, &r) < 0)
        return -errno;
    c->injected++;
    *ret = (long)r.rax;
    return 0;
}

int inject(struct ckpt *c, long nr, long a1, long a2, long a3, long a4, long *ret) {
    return inject6(c, nr, a1, a2, a3, a4, 0, 0, ret);
}

int put_registers(struct ckpt *c) {
    if (ptrace(PTRACE_SETREGS, c->pid, 0, &c->resume) < 0)
        return -errno;
    struct iovec iov = {c->xstate, c->xstate_len};
    if (ptrace(PTRACE_SETREGSET, c->pid, (void *)NT_X86_XSTATE, &iov) < 0)
        return -errno;
    return 0;
}

int poke(struct ckpt *c, uintptr_t addr, const void *data, size_t len) {
    ssize_t n = pwrite(c->mem_fd, data, len, (off_t)addr);
    return n == (ssize_t)len ? 0 : (n < 0 ? -errno : -EIO);
}

/* Register [start, end) of the worker with its userfaultfd (our duplicate of it). */
static const char *register_in_worker(struct ckpt *c, uintptr_t start, uintptr_t end) {
    struct uffdio_register reg = {
        .range = {.start = start, .len = end - start},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    return ioctl(c->uffd, UFFDIO_REGISTER, &reg) < 0 ? "registering a re-created mapping failed"
                                                     : NULL;
}

/* Unmap what is new, reset brk, map removed memory again; then the list must be the
 * checkpoint's exactly. */
const char *repair_maps(struct ckpt *c) {
    long ret;
    const char *why;
    for (int i = 0; i < c->plan.nunmap; i++)
        if (inject(c, SYS_munmap, (long)c->plan.unmap_start[i],
                   (long)(c->plan.unmap_end[i] - c->plan.unmap_start[i]), 0, 0, &ret) < 0 ||
            ret != 0)
            return "unmapping a new mapping failed";
    if (c->plan.reset_brk &&
        (inject(c, SYS_brk, (long)c->brk, 0, 0, 0, &ret) < 0 || (uintptr_t)ret != c->brk))
        return "resetting brk failed";
    if (c->plan.heap_regrow &&
        (why = register_in_worker(c, c->plan.heap_regrow, c->heap_end)) != NULL)
        return why;
    for (int i = 0; i < c->plan.nrecreate; i++) {
        const struct region *k = &c->regions[c->plan.recreate[i]];
        if (inject6(c, SYS_mmap, (long)k->start, (long)(k->end - k->start), k->prot,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0, &ret) < 0 ||
            (uintptr_t)ret != k->start)
            return "mapping a removed mapping again failed";
        if ((why = register_in_worker(c, k->start, k->end)) != NULL)
            return why;
    }
    if (!c->plan.nunmap && !c->plan.reset_brk && !c->plan.nrecreate)
        return NULL;
    memset(c->cur_pool, 0, c->cur_used);
    int n = parse_maps(c, c->pid, c->cur, c->cur_pool, &c->cur_used);
    if (n != c->nregions)
        return "the mappings differ from the checkpoint's after the repair";
    for (int i = 0; i < n; i++)
        if (!same_region(&c->cur[i], c->cur_pool, &c->regions[i], c->pool))
            return "the mappings differ from the checkpoint's after the repair";
    return NULL;
}

/* The other kernel-side repairs, as system calls made by the stopped worker. */
const char *repair(struct ckpt *c, const struct pstatus *st) {
    long ret;
    for (int i = 0; i < c->plan.nclose; i++)
        if (inject(c, SYS_close, c->plan.close_fd[i], 0, 0, 0, &ret) < 0)
            return "closing a request's descriptor failed";
    for (int i = 0; i < c->plan.nsetfl; i++) {
        const struct saved_fd *f = &c->fds[c->plan.setfl_fd[i]];
        if (inject(c, SYS_fcntl, f->fd, F_SETFL, (long)f->flags, 0, &ret) < 0 || ret < 0)
            return "restoring a descriptor's flags failed";
    }
    /* Signal dispositions: whatever is or was caught, and whatever changed. */
    for (int sig = 1; sig <= MAX_SIG; sig++) {
        uint64_t bit = 1ULL << (sig - 1);
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (!((c->st.cgt | st->cgt) & bit) && !((c->st.ign ^ st->ign) & bit))
            continue;
        if (poke(c, c->scratch, &c->acts[sig], sizeof c->acts[sig]) < 0 ||
            inject(c, SYS_rt_sigaction, sig, (long)c->scratch, 0, 8, &ret) < 0 || ret != 0)
            return "restoring a signal disposition failed";
    }
    if (st->blk != c->st.blk &&
        (poke(c, c->scratch, &c->st.blk, 8) < 0 ||
         inject(c, SYS_rt_sigprocmask, SIG_SETMASK, (long)c->scratch, 0, 8, &ret) < 0 || ret != 0))
        return "restoring the signal mask failed";
    if (st->umask != c->st.umask && inject(c, SYS_umask, (long)c->st.umask, 0, 0, 0, &ret) < 0)
        return "restoring the umask failed";
    /* Children killed by stop() are the worker's zombies now: reap them in it. */
    for (int i = 0; i < c->nzombies; i++)
        if (inject(c, SYS_wait4, c->zombies[i], 0, __WALL, 0, &ret) < 0)
            return "reaping a killed child failed";
    c->nzombies = 0;
    pid_t kids[64];
    if (read_children(c->pid, kids, 64) != 0)
        return "the worker still has children";
    return NULL;
}
