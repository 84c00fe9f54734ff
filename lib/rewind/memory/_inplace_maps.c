/*
 * The worker's /proc files, parsed into the checkpoint's records (mappings, status,
 * descriptors, children), and the plan of a rewind's repairs from them: which mappings
 * to unmap or map again, whether brk is reset, which descriptors to close or fix.
 * Runs in the snapshot process; nothing here changes the worker.
 */
#include "_inplace.h"

int read_file_into(const char *path, char *buf, size_t cap, size_t *len) {
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

unsigned long long hex_at(const char **p) {
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

unsigned long long dec_at(const char **p) {
    unsigned long long v = 0;
    while (**p >= '0' && **p <= '9') {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
    }
    return v;
}

/* Parse /proc/PID/maps into out[]; returns the count or -errno. */
int parse_maps(struct ckpt *c, pid_t pid, struct region *out, char *pool, uint32_t *pool_used) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    int rc = read_file_into(path, c->maps_buf, MAPS_BUF, &c->maps_len);
    if (rc < 0)
        return rc;
    int n = 0;
    *pool_used = 1;
    pool[0] = 0;
    const char *p = c->maps_buf, *end = c->maps_buf + c->maps_len;
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

int same_region(const struct region *a, const char *apool, const struct region *b,
                const char *bpool) {
    if (a->start != b->start || a->end != b->end || a->prot != b->prot || a->shared != b->shared ||
        a->offset != b->offset || a->inode != b->inode || a->dev_major != b->dev_major ||
        a->dev_minor != b->dev_minor)
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

long dec_field(const char *buf, const char *key) {
    const char *p = strstr(buf, key);
    if (!p)
        return -1;
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    return (long)dec_at(&p);
}

/* The octal number after key in buf (umask, file status flags), or 0 without key. */
static unsigned oct_field(const char *buf, const char *key) {
    const char *p = strstr(buf, key);
    unsigned v = 0;
    if (!p)
        return 0;
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    while (*p >= '0' && *p <= '7')
        v = v * 8 + (unsigned)(*p++ - '0');
    return v;
}

int read_status(pid_t pid, struct pstatus *st) {
    char path[64], buf[4096];
    size_t len;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int rc = read_file_into(path, buf, sizeof buf, &len);
    if (rc < 0)
        return rc;
    st->threads = (int)dec_field(buf, "\nThreads:");
    st->umask = oct_field(buf, "\nUmask:");
    st->pnd = hex_field(buf, "\nSigPnd:");
    st->shdpnd = hex_field(buf, "\nShdPnd:");
    st->blk = hex_field(buf, "\nSigBlk:");
    st->ign = hex_field(buf, "\nSigIgn:");
    st->cgt = hex_field(buf, "\nSigCgt:");
    return st->threads > 0 ? 0 : -EPROTO;
}

/* Descriptors of PID: numbers, the file each refers to, and status flags. */
int read_fds(pid_t pid, struct saved_fd *out, int cap) {
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
            if (read_file_into(ipath, info, sizeof info, &ilen) == 0)
                s->flags = oct_field(info, "flags:");
        }
    }
    close(dfd);
    return n;
}

int read_children(pid_t pid, pid_t *out, int cap) {
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

int is_tracked(const struct region *r) { return !r->shared && !r->special; }

int find_region(const struct region *rs, int n, uintptr_t addr) {
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

/* Plan to unmap [start, end); NULL, or why not. */
static const char *plan_unmap(struct ckpt *c, uintptr_t start, uintptr_t end) {
    if (c->plan.nunmap >= (int)(sizeof c->plan.unmap_start / sizeof c->plan.unmap_start[0]))
        return "too many new mappings";
    c->plan.unmap_start[c->plan.nunmap] = start;
    c->plan.unmap_end[c->plan.nunmap++] = end;
    return NULL;
}

/* A mapping that is in no checkpoint region: it goes, unless it is special. */
static const char *plan_new(struct ckpt *c, const struct region *cur) {
    return cur->special ? "a special mapping moved" : plan_unmap(c, cur->start, cur->end);
}

/* Anonymous private writable memory can be mapped again and refilled from the backup;
 * anything else that was removed or changed cannot be put back. */
static int recreatable(const struct region *k) {
    return !k->shared && (k->prot & PROT_WRITE) && !k->path && !k->inode;
}

/* Compare the worker's mappings with the checkpoint's and plan the repairs. */
const char *plan_maps(struct ckpt *c) {
    int n = parse_maps(c, c->pid, c->cur, c->cur_pool, &c->cur_used);
    if (n < 0)
        return "reading the worker's maps failed";
    c->ncur = n;
    c->plan.nunmap = c->plan.nrecreate = 0;
    c->plan.reset_brk = 0;
    c->plan.heap_regrow = 0;
    int j = 0;
    for (int i = 0; i < c->nregions; i++) {
        const struct region *k = &c->regions[i];
        const char *why;
        for (; j < n && c->cur[j].end <= k->start; j++)
            if ((why = plan_new(c, &c->cur[j])) != NULL)
                return why;
        if (j < n && k->stack && c->cur[j].stack && c->cur[j].end == k->end &&
            c->cur[j].start < k->start && c->cur[j].prot == k->prot) {
            /* the stack grew below its checkpoint extent: drop the growth */
            if ((why = plan_unmap(c, c->cur[j].start, k->start)) != NULL)
                return why;
            j++;
            continue;
        }
        if (j < n && k->heap && c->cur[j].heap && c->cur[j].start == k->start &&
            c->cur[j].end < k->end && c->cur[j].prot == k->prot) {
            /* malloc gave memory back: brk grows it again, then it is registered */
            c->plan.reset_brk = 1;
            c->plan.heap_regrow = c->cur[j].end;
            j++;
            continue;
        }
        if (j < n && same_region(&c->cur[j], c->cur_pool, k, c->pool)) {
            j++;
            continue;
        }
        if (!recreatable(k))
            return "a checkpoint mapping was removed, moved or re-protected";
        /* Removed or changed (munmap of an arena, mprotect, a new mapping on top):
         * clear the whole range, map it again, refill it from the backup. */
        if ((why = plan_unmap(c, k->start, k->end)) != NULL)
            return why;
        if (c->plan.nrecreate >= (int)(sizeof c->plan.recreate / sizeof c->plan.recreate[0]))
            return "too many removed mappings";
        c->plan.recreate[c->plan.nrecreate++] = i;
        for (; j < n && c->cur[j].end <= k->end; j++)
            ;
    }
    for (; j < n; j++) {
        const char *why = plan_new(c, &c->cur[j]);
        if (why)
            return why;
    }
    /* A heap that grew shows as new [heap] regions above the checkpoint's end; brk
     * is reset rather than unmapped, so the kernel's brk agrees with malloc's. */
    int keep = 0;
    for (int i = 0; i < c->plan.nunmap; i++) {
        int k = find_region(c->cur, n, c->plan.unmap_start[i]);
        if (k >= 0 && c->cur[k].heap && c->plan.unmap_start[i] >= c->heap_end) {
            c->plan.reset_brk = 1;
            continue;
        }
        c->plan.unmap_start[keep] = c->plan.unmap_start[i];
        c->plan.unmap_end[keep++] = c->plan.unmap_end[i];
    }
    c->plan.nunmap = keep;
    return NULL;
}

/* Compare descriptors with the checkpoint's: plan closes and flag fixes, refuse a
 * checkpoint descriptor that was closed or replaced. */
const char *plan_fds(struct ckpt *c) {
    struct saved_fd now[MAX_FDS];
    int n = read_fds(c->pid, now, MAX_FDS);
    if (n < 0)
        return "the request opened too many descriptors";
    int seen = 0;
    c->plan.nclose = c->plan.nsetfl = 0;
    for (int i = 0; i < n; i++) {
        const struct saved_fd *s = NULL;
        for (int k = 0; k < c->nfds; k++)
            if (c->fds[k].fd == now[i].fd)
                s = &c->fds[k];
        if (!s) {
            c->plan.close_fd[c->plan.nclose++] = now[i].fd;
            continue;
        }
        seen++;
        if (s->dev != now[i].dev || s->ino != now[i].ino)
            return "a checkpoint descriptor was replaced";
        if (s->flags != now[i].flags)
            c->plan.setfl_fd[c->plan.nsetfl++] = (int)(s - c->fds);
    }
    return seen == c->nfds ? NULL : "a checkpoint descriptor was closed";
}

const char *check_kernel_state(struct ckpt *c, const struct pstatus *st) {
    if (st->threads != 1)
        return "the request left threads";
    /* SIGCHLD, SIGURG, SIGWINCH and SIGCONT are ignored by default: harmless. */
    uint64_t harmless = (1ULL << (SIGCHLD - 1)) | (1ULL << (SIGURG - 1)) |
                        (1ULL << (SIGWINCH - 1)) | (1ULL << (SIGCONT - 1));
    if ((st->pnd | st->shdpnd) & ~harmless)
        return "signals are pending";
    struct stat cst;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)c->pid);
    if (stat(path, &cst) < 0 || cst.st_dev != c->cwd_dev || cst.st_ino != c->cwd_ino)
        return "the working directory changed";
    snprintf(path, sizeof path, "/proc/%d/timers", (int)c->pid);
    char buf[256];
    size_t len = 0;
    if (read_file_into(path, buf, sizeof buf, &len) == 0 && len > 0)
        return "the request created POSIX timers";
    if (c->vdso_len) {
        char now[sizeof c->vdso];
        if (pread(c->mem_fd, now, c->vdso_len, (off_t)c->vdso_start) != (ssize_t)c->vdso_len ||
            memcmp(now, c->vdso, c->vdso_len) != 0)
            return "the vdso was modified";
    }
    return NULL;
}
