/*
 * Per-process kernel state of the worker besides memory, descriptors and signals:
 * recorded at the checkpoint, checked and put back after every request (see below).
 * Runs in the snapshot process; the record is a mapping of its own (c->ks).
 */
#include "_inplace.h"

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
    {"the parent-death signal", SYS_prctl, PR_GET_PDEATHSIG, 0, 2, SYS_prctl, PR_SET_PDEATHSIG, 0,
     2},
    {"the child-subreaper flag", SYS_prctl, PR_GET_CHILD_SUBREAPER, 0, 2, SYS_prctl,
     PR_SET_CHILD_SUBREAPER, 0, 2},
    {"the dumpable flag", SYS_prctl, PR_GET_DUMPABLE, 0, 0, SYS_prctl, PR_SET_DUMPABLE, 0, 2},
    {"the THP-disable flag", SYS_prctl, PR_GET_THP_DISABLE, 0, 0, SYS_prctl, PR_SET_THP_DISABLE, 0,
     2},
    {"the NUMA memory policy", SYS_get_mempolicy, 0, 0, 1, SYS_set_mempolicy, 0, 0, 1},
};
#define NKGET ((int)(sizeof KGET / sizeof KGET[0]))
/* The timer slack's getter, used when /proc/PID/timerslack_ns may not be (no CAP_SYS_NICE). */
static const struct kgetter KG_SLACK = {
    "the timer slack", SYS_prctl, PR_GET_TIMERSLACK, 0, 0, SYS_prctl, PR_SET_TIMERSLACK, 0, 2};

/* The two-letter VmFlags of smaps, one bit each; anything unknown is bit 63. */
static const char VMCODES[][3] = {"rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf",
                                  "dw", "lo", "io", "sr", "rr", "dc", "de", "ac", "nr", "ht",
                                  "sf", "nl", "ar", "wf", "dd", "sd", "mm", "hg", "nh", "mg",
                                  "bt", "mt", "um", "uw", "ss", "sl", "lf", "gu", "pt", "dx"};
#define VMF(code) (1ULL << vmbit(code))

/* Status lines that no rewind may put back; a change means a new worker. Seccomp and
 * NoNewPrivs come first so the reason names them. */
static const char *const ID_KEYS[] = {"Seccomp:",
                                      "Seccomp_filters:",
                                      "NoNewPrivs:",
                                      "Uid:",
                                      "Gid:",
                                      "Groups:",
                                      "CapInh:",
                                      "CapPrm:",
                                      "CapEff:",
                                      "CapBnd:",
                                      "CapAmb:",
                                      "NSpgid:",
                                      "NSsid:",
                                      "Speculation_Store_Bypass:",
                                      "SpeculationIndirectBranch:",
                                      "untag_mask:",
                                      "x86_Thread_features:",
                                      "x86_Thread_features_locked:",
                                      NULL};
static const char *const NS_NAMES[] = {
    "cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children",
    "user",   "uts", NULL};
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

static int vmbit(const char *c) {
    for (int i = 0; i < (int)(sizeof VMCODES / sizeof VMCODES[0]); i++)
        if (VMCODES[i][0] == c[0] && VMCODES[i][1] == c[1])
            return i;
    return 63;
}

static void ks_wipe(struct ckpt *c) { memset(c->ks->text, 0, sizeof c->ks->text); }

void ks_release(struct ckpt *c) {
    if (c->ks)
        munmap(c->ks, sizeof *c->ks);
    c->ks = NULL;
}

static int ks_read(struct ckpt *c, const char *name, char *out, size_t cap) {
    char path[96];
    size_t len;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)c->pid, name);
    return read_file_into(path, out, cap, &len);
}

static int ks_write(struct ckpt *c, const char *name, const char *text) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)c->pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -(n < 0 ? e : EIO);
}

/* The status lines of ID_KEYS, in that order, into out; -errno on failure. */
static int ks_identity_text(struct ckpt *c, char *out, size_t cap) {
    int rc = ks_read(c, "status", c->ks->text, sizeof c->ks->text);
    if (rc < 0)
        return rc;
    size_t used = 0;
    out[0] = 0;
    for (int k = 0; ID_KEYS[k]; k++) {
        char key[48];
        snprintf(key, sizeof key, "\n%s", ID_KEYS[k]);
        const char *p = strstr(c->ks->text, key);
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
static const char *ks_identity_diff(struct ckpt *c, const char *a, const char *b) {
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
    snprintf(c->ks->why, sizeof c->ks->why,
             "the request changed the worker's %.*s (/proc/PID/status)", n > 40 ? 40 : n,
             *a ? a : b);
    return c->ks->why;
}

static int ks_stat_fields(struct ckpt *c, unsigned long long *out) {
    int rc = ks_read(c, "stat", c->ks->text, sizeof c->ks->text);
    if (rc < 0)
        return rc;
    const char *p = strrchr(c->ks->text, ')'); /* comm may hold anything but not after this */
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

static int ks_namespaces(struct ckpt *c, struct stat *ns, struct stat *root) {
    char path[96];
    for (int i = 0; NS_NAMES[i]; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)c->pid, NS_NAMES[i]);
        if (stat(path, &ns[i]) < 0)
            memset(&ns[i], 0, sizeof ns[i]); /* a namespace kind this kernel lacks */
    }
    snprintf(path, sizeof path, "/proc/%d/root", (int)c->pid);
    return stat(path, root) < 0 ? -errno : 0;
}

static int ks_sched(struct ckpt *c, struct rw_sched_attr *a) {
    memset(a, 0, sizeof *a);
    return syscall(SYS_sched_getattr, c->pid, a, sizeof *a, 0) < 0 ? -errno : 0;
}

static int ks_robust(struct ckpt *c, uint64_t *head, size_t *len) {
    void *h = NULL;
    return syscall(SYS_get_robust_list, c->pid, &h, len) < 0 ? -errno
                                                             : (*head = (uint64_t)(uintptr_t)h, 0);
}

static unsigned long ks_hex(struct ckpt *c, const char *name) {
    if (ks_read(c, name, c->ks->text, sizeof c->ks->text) < 0)
        return ~0UL;
    const char *p = c->ks->text;
    return (unsigned long)hex_at(&p);
}

/* Read one getter's value by injection; -errno when the call fails. */
static int ks_get(struct ckpt *c, const struct kgetter *g, long *val) {
    long a[6] = {g->a1, g->a2, 0, 0, 0, 0}, ret;
    int zero = 0;
    if (g->ptr_at) {
        a[g->ptr_at - 1] = (long)c->scratch;
        if (poke(c, c->scratch, &zero, sizeof zero) < 0)
            return -EIO;
    }
    int rc = inject6(c, g->nr, a[0], a[1], a[2], a[3], a[4], a[5], &ret);
    if (rc < 0)
        return rc;
    if (ret < 0)
        return (int)ret;
    if (!g->ptr_at)
        return *val = ret, 0;
    int v;
    if (pread(c->mem_fd, &v, sizeof v, (off_t)c->scratch) != (ssize_t)sizeof v)
        return -EIO;
    *val = v;
    return 0;
}

static int ks_set(struct ckpt *c, const struct kgetter *g, long val) {
    long a[6] = {g->s1, g->s2, 0, 0, 0, 0}, ret;
    if (!g->snr)
        return -EPERM;
    a[g->val_at - 1] = val;
    int rc = inject6(c, g->snr, a[0], a[1], a[2], a[3], a[4], a[5], &ret);
    return rc < 0 ? rc : (ret < 0 ? (int)ret : 0);
}

static int ks_itimer(struct ckpt *c, int which, struct itimerval *out) {
    long ret = 0;
    int rc = inject(c, SYS_getitimer, which, (long)c->scratch, 0, 0, &ret);
    if (rc < 0 || ret < 0)
        return rc < 0 ? rc : (int)ret;
    return pread(c->mem_fd, out, sizeof *out, (off_t)c->scratch) == (ssize_t)sizeof *out ? 0 : -EIO;
}

static int ks_altstack(struct ckpt *c, struct rw_altstack *out) {
    long ret = 0;
    int rc = inject(c, SYS_sigaltstack, 0, (long)c->scratch, 0, 0, &ret);
    if (rc < 0 || ret < 0)
        return rc < 0 ? rc : (int)ret;
    return pread(c->mem_fd, out, sizeof *out, (off_t)c->scratch) == (ssize_t)sizeof *out ? 0 : -EIO;
}

/* VmFlags of every mapping, in maps order, into out (which must hold nregions). The
 * layout equals the checkpoint's when this runs (after repair_maps). */
static const char *ks_vmflags(struct ckpt *c, uint64_t *out) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)c->pid);
    if (read_file_into(path, c->maps_buf, MAPS_BUF, &c->maps_len) < 0)
        return "reading the worker's smaps failed";
    int i = -1;
    for (const char *p = c->maps_buf; *p;) {
        const char *eol = strchr(p, '\n');
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) {
            const char *q = p;
            uintptr_t start = (uintptr_t)hex_at(&q);
            if (*q == '-') {
                if (++i >= c->nregions || start != c->regions[i].start)
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
    return i + 1 == c->nregions ? NULL : "the worker's smaps do not match its mappings";
}

/* The flags a request may add to a checkpoint mapping and the madvise that clears each
 * (for every mapping at once, in the fast path); sr/rr share MADV_NORMAL. */
static const struct {
    const char *code;
    int advice;
} UNDO[] = {{"wf", 19 /* MADV_KEEPONFORK */},
            {"dc", MADV_DOFORK},
            {"dd", 17 /* MADV_DODUMP */},
            {"sr", MADV_NORMAL},
            {"rr", MADV_NORMAL}};
#define NUNDO ((int)(sizeof UNDO / sizeof UNDO[0]))

/* The fast path: clear what UNDO clears over every range, whatever the request did (a
 * few injected calls, against about 0.6 ms for reading smaps). 0 or a reason. */
static const char *ks_clear_vmflags(struct ckpt *c) {
    long ret = 0;
    for (int u = 0; u < NUNDO; u++) {
        if (u > 0 && UNDO[u].advice == UNDO[u - 1].advice)
            continue;
        for (int i = 0; i < c->ks->nmadv; i++)
            if (inject(c, SYS_madvise, (long)c->ks->madv_start[i],
                       (long)(c->ks->madv_end[i] - c->ks->madv_start[i]), UNDO[u].advice, 0,
                       &ret) < 0 ||
                (ret != 0 && ret != -ENOMEM))
                return "clearing the mappings' madvise flags failed";
    }
    return NULL;
}

/* Plan the fast path at the checkpoint: ranges between special mappings, and a trial
 * of every call (which must change nothing: no UNDO flag is set at the checkpoint). */
static void ks_plan_vmflags(struct ckpt *c) {
    uint64_t any = 0;
    c->ks->nmadv = 0;
    for (int i = 0; i < c->nregions; i++) {
        const struct region *r = &c->regions[i];
        if (r->special) /* [vvar] is dont-dump, for one: they are left alone */
            continue;
        any |= c->ks->vmflags[i];
        if (c->ks->nmadv && i > 0 && !c->regions[i - 1].special)
            c->ks->madv_end[c->ks->nmadv - 1] = r->end;
        else if (c->ks->nmadv < 8) {
            c->ks->madv_start[c->ks->nmadv] = r->start;
            c->ks->madv_end[c->ks->nmadv++] = r->end;
        } else
            return;
    }
    for (int u = 0; u < NUNDO; u++)
        if (any & VMF(UNDO[u].code))
            return;
    c->ks->madv_fast = ks_clear_vmflags(c) == NULL;
}

/* Record everything above; runs once in capture, before the backup is taken. */
int kstate_capture(struct ckpt *c, const char **what) {
    ks_release(c);
    void *p = mmap(NULL, sizeof(struct kstate), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return *what = "allocating the kernel-state record", -errno;
    madvise(p, sizeof(struct kstate), MADV_DONTFORK);
    c->ks = p;
    int rc;
    if ((rc = ks_identity_text(c, c->ks->id_text, sizeof c->ks->id_text)) < 0 ||
        (rc = ks_stat_fields(c, c->ks->stat_fields)) < 0 ||
        (rc = ks_namespaces(c, c->ks->ns, &c->ks->root)) < 0)
        return *what = "reading the worker's identity", rc;
    c->ks->has_rseq = ptrace(RW_PTRACE_GET_RSEQ_CONFIGURATION, c->pid, (void *)sizeof c->ks->rseq,
                             &c->ks->rseq) > 0;
    if (ks_read(c, "ksm_stat", c->ks->ksm, sizeof c->ks->ksm) < 0)
        c->ks->ksm[0] = 0;
    for (int r = 0; r < KS_NLIMITS; r++)
        if (prlimit(c->pid, r, NULL, &c->ks->rl[r]) < 0)
            return *what = "reading the worker's rlimits", -errno;
    errno = 0;
    c->ks->nice = getpriority(PRIO_PROCESS, (id_t)c->pid);
    if (errno || sched_getaffinity(c->pid, sizeof c->ks->cpus, &c->ks->cpus) < 0 ||
        ks_sched(c, &c->ks->sched) < 0 ||
        (c->ks->ioprio = (int)syscall(SYS_ioprio_get, 1, c->pid)) < 0)
        return *what = "reading the worker's scheduling", -errno;
    if ((rc = ks_read(c, "oom_score_adj", c->ks->oom, sizeof c->ks->oom)) < 0 ||
        (rc = ks_read(c, "coredump_filter", c->ks->coredump, sizeof c->ks->coredump)) < 0 ||
        (rc = ks_read(c, "comm", c->ks->comm, sizeof c->ks->comm)) < 0)
        return *what = "reading the worker's /proc files", rc;
    if ((c->ks->persona = ks_hex(c, "personality")) == ~0UL)
        return *what = "reading the worker's personality", -EIO;
    char slack[32];
    c->ks->slack_outside = ks_read(c, "timerslack_ns", slack, sizeof slack) == 0;
    if (c->ks->slack_outside) {
        const char *s = slack;
        c->ks->slack = dec_at(&s);
    }
    if ((rc = ks_robust(c, &c->ks->robust_head, &c->ks->robust_len)) < 0)
        return *what = "reading the worker's robust-futex list", rc;
    /* Getters the kernel refuses here (no privilege, an older kernel) are skipped: the
     * request cannot use the setter either. */
    for (int i = 0; i <= NKGET; i++) {
        const struct kgetter *g = i < NKGET ? &KGET[i] : &KG_SLACK;
        c->ks->has[i] = !(i == NKGET && c->ks->slack_outside) && ks_get(c, g, &c->ks->got[i]) == 0;
    }
    for (int w = 0; w < 3; w++)
        if ((rc = ks_itimer(c, w, &c->ks->it[w])) < 0)
            return *what = "reading the worker's interval timers", rc;
    if ((rc = ks_altstack(c, &c->ks->alt)) < 0)
        return *what = "reading the worker's sigaltstack", rc;
    const char *why = ks_vmflags(c, c->ks->vmflags);
    memset(c->maps_buf, 0, c->maps_len + 1);
    if (why)
        return *what = why, -EPROTO;
    for (int i = 0; i < c->nregions; i++)
        if (c->ks->vmflags[i] & (VMF("lo") | VMF("lf")))
            return *what = "the checkpoint holds locked memory (mlock)", -ENOTSUP;
    ks_plan_vmflags(c);
    ks_wipe(c);
    return 0;
}

/* Before any injected call: what only a new worker puts back. */
const char *kstate_check_identity(struct ckpt *c) {
    char now[KS_TEXT];
    const char *why = NULL;
    unsigned long long fields[16] = {0};
    struct stat ns[16], root;
    if (ks_identity_text(c, now, sizeof now) < 0)
        why = "reading the worker's status failed";
    else
        why = ks_identity_diff(c, c->ks->id_text, now);
    if (!why) {
        struct rw_rseq_cfg rs;
        memset(&rs, 0, sizeof rs);
        if (c->ks->has_rseq &&
            (ptrace(RW_PTRACE_GET_RSEQ_CONFIGURATION, c->pid, (void *)sizeof rs, &rs) <= 0 ||
             memcmp(&rs, &c->ks->rseq, sizeof rs) != 0))
            why = "the request changed the worker's rseq registration";
    }
    if (!why &&
        (ks_stat_fields(c, fields) < 0 || memcmp(fields, c->ks->stat_fields, sizeof fields) != 0))
        why = "the request changed the worker's process group, session or mm fields (stat)";
    if (!why && (ks_namespaces(c, ns, &root) < 0 || root.st_dev != c->ks->root.st_dev ||
                 root.st_ino != c->ks->root.st_ino))
        why = "the request changed the worker's root directory";
    for (int i = 0; !why && NS_NAMES[i]; i++)
        if (ns[i].st_ino != c->ks->ns[i].st_ino || ns[i].st_dev != c->ks->ns[i].st_dev)
            why = "the request moved the worker to another namespace";
    if (!why && c->ks->ksm[0] &&
        (ks_read(c, "ksm_stat", c->ks->text, sizeof c->ks->text) < 0 ||
         strcmp(strstr(c->ks->text, "ksm_merge_any") ? strstr(c->ks->text, "ksm_merge_any") : "",
                strstr(c->ks->ksm, "ksm_merge_any") ? strstr(c->ks->ksm, "ksm_merge_any") : "") !=
             0))
        why = "the request changed the worker's KSM merging";
    memset(now, 0, sizeof now);
    ks_wipe(c);
    return why;
}

static int same_sched(const struct rw_sched_attr *a, const struct rw_sched_attr *b) {
    return a->policy == b->policy && a->flags == b->flags && a->priority == b->priority &&
           a->runtime == b->runtime && a->deadline == b->deadline && a->period == b->period &&
           a->util_min == b->util_min && a->util_max == b->util_max;
}

static int ks_text_is(struct ckpt *c, const char *name, const char *want) {
    int rc = ks_read(c, name, c->ks->text, sizeof c->ks->text);
    int same = rc == 0 && strcmp(c->ks->text, want) == 0;
    ks_wipe(c);
    return same;
}

/* Put back from the snapshot process what it can set itself; read it again. */
const char *kstate_restore_outside(struct ckpt *c) {
    for (int r = 0; r < KS_NLIMITS; r++) {
        struct rlimit now;
        if (prlimit(c->pid, r, NULL, &now) < 0)
            return "reading the worker's rlimits failed";
        if (now.rlim_cur == c->ks->rl[r].rlim_cur && now.rlim_max == c->ks->rl[r].rlim_max)
            continue;
        /* raising the hard limit back needs CAP_SYS_RESOURCE: the re-read says */
        prlimit(c->pid, r, &c->ks->rl[r], NULL);
        if (prlimit(c->pid, r, NULL, &now) < 0 || now.rlim_cur != c->ks->rl[r].rlim_cur ||
            now.rlim_max != c->ks->rl[r].rlim_max)
            return "a resource limit could not be put back";
    }
    cpu_set_t cpus;
    if (sched_getaffinity(c->pid, sizeof cpus, &cpus) < 0)
        return "reading the worker's CPU affinity failed";
    if (!CPU_EQUAL(&cpus, &c->ks->cpus) &&
        (sched_setaffinity(c->pid, sizeof c->ks->cpus, &c->ks->cpus) < 0 ||
         sched_getaffinity(c->pid, sizeof cpus, &cpus) < 0 || !CPU_EQUAL(&cpus, &c->ks->cpus)))
        return "the CPU affinity could not be put back";
    struct rw_sched_attr sa;
    if (ks_sched(c, &sa) < 0)
        return "reading the worker's scheduling failed";
    if (!same_sched(&sa, &c->ks->sched)) {
        struct rw_sched_attr want = c->ks->sched;
        want.size = sizeof want;
        want.flags &= 1; /* SCHED_FLAG_RESET_ON_FORK; clamps are compared, not set */
        if (syscall(SYS_sched_setattr, c->pid, &want, 0) < 0 || ks_sched(c, &sa) < 0 ||
            !same_sched(&sa, &c->ks->sched))
            return "the scheduling policy could not be put back";
    }
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)c->pid);
    if (errno)
        return "reading the worker's nice value failed";
    if (nice != c->ks->nice) {
        /* lowering it needs CAP_SYS_NICE (or RLIMIT_NICE): the re-read says */
        setpriority(PRIO_PROCESS, (id_t)c->pid, c->ks->nice);
        errno = 0;
        if (getpriority(PRIO_PROCESS, (id_t)c->pid) != c->ks->nice || errno)
            return "the nice value could not be put back";
    }
    int io = (int)syscall(SYS_ioprio_get, 1, c->pid);
    if (io != c->ks->ioprio && (syscall(SYS_ioprio_set, 1, c->pid, c->ks->ioprio) < 0 ||
                                (int)syscall(SYS_ioprio_get, 1, c->pid) != c->ks->ioprio))
        return "the I/O priority could not be put back";
    static const char *const files[] = {"oom_score_adj", "coredump_filter"};
    for (int i = 0; i < 2; i++) {
        const char *want = i ? c->ks->coredump : c->ks->oom;
        if (ks_text_is(c, files[i], want))
            continue;
        ks_write(c, files[i], want);
        if (!ks_text_is(c, files[i], want))
            return i ? "coredump_filter could not be put back"
                     : "oom_score_adj could not be put back";
    }
    if (c->ks->slack_outside) {
        char want[32];
        snprintf(want, sizeof want, "%llu\n", c->ks->slack);
        if (!ks_text_is(c, "timerslack_ns", want)) {
            ks_write(c, "timerslack_ns", want);
            if (!ks_text_is(c, "timerslack_ns", want))
                return "the timer slack could not be put back";
        }
    }
    return NULL;
}

/* madvise calls that undo a flag a request added to a checkpoint mapping. */
static const char *ks_undo_vmflags(struct ckpt *c) {
    uint64_t *now = (uint64_t *)(void *)c->found; /* scratch: c->found is free here */
    const char *why = ks_vmflags(c, now);
    int changed = 0;
    long ret;
    for (int i = 0; !why && i < c->nregions; i++) {
        uint64_t gained = now[i] & ~c->ks->vmflags[i] & ~VMF("sd");
        if (c->ks->vmflags[i] & ~now[i] & VMF("uw")) {
            why = "a tracked mapping lost its write tracking (userfaultfd)";
            break;
        }
        if (!gained && (c->ks->vmflags[i] & ~now[i] & ~VMF("sd")) == 0)
            continue;
        changed = 1;
        for (int u = 0; u < NUNDO; u++)
            if ((gained & VMF(UNDO[u].code)) &&
                inject(c, SYS_madvise, (long)c->regions[i].start,
                       (long)(c->regions[i].end - c->regions[i].start), UNDO[u].advice, 0,
                       &ret) < 0)
                why = "restoring a mapping's flags failed";
    }
    if (!why && changed) {
        memset(c->maps_buf, 0, c->maps_len + 1);
        why = ks_vmflags(c, now);
        for (int i = 0; !why && i < c->nregions; i++)
            if ((now[i] ^ c->ks->vmflags[i]) & ~VMF("sd"))
                why = "a mapping's flags (madvise, mlock: VmFlags) could not be put back";
    }
    memset(now, 0, sizeof(uint64_t) * (size_t)c->nregions);
    return why;
}

/* What only the worker can read or set: injected getters, setters, and re-reads. Runs
 * after kstate_check_identity, so no seccomp filter or dispatch range of the request's
 * can change what the calls do; its writes to the scratch page are copied back. */
const char *kstate_restore_injected(struct ckpt *c) {
    long ret;
    /* mlockall(MCL_FUTURE) leaves no trace until the next mapping: always undo it (the
     * checkpoint holds no locked memory; capture refuses one that does). */
    if (inject(c, SYS_munlockall, 0, 0, 0, 0, &ret) < 0 || ret != 0)
        return "munlockall in the worker failed";
    char want[32];
    if (!ks_text_is(c, "comm", c->ks->comm)) {
        memset(want, 0, sizeof want);
        size_t n = strcspn(c->ks->comm, "\n");
        memcpy(want, c->ks->comm, n < 15 ? n : 15);
        if (poke(c, c->scratch, want, 16) < 0 ||
            inject(c, SYS_prctl, PR_SET_NAME, (long)c->scratch, 0, 0, &ret) < 0 ||
            !ks_text_is(c, "comm", c->ks->comm))
            return "the process name (comm) could not be put back";
    }
    if (ks_hex(c, "personality") != c->ks->persona &&
        (inject(c, SYS_personality, (long)c->ks->persona, 0, 0, 0, &ret) < 0 ||
         ks_hex(c, "personality") != c->ks->persona))
        return "the personality could not be put back";
    ks_wipe(c);
    uint64_t head = 0;
    size_t len = 0;
    if (ks_robust(c, &head, &len) < 0)
        return "reading the robust-futex list failed";
    if ((head != c->ks->robust_head || len != c->ks->robust_len) &&
        (inject(c, SYS_set_robust_list, (long)c->ks->robust_head, (long)c->ks->robust_len, 0, 0,
                &ret) < 0 ||
         ks_robust(c, &head, &len) < 0 || head != c->ks->robust_head || len != c->ks->robust_len))
        return "the robust-futex list could not be put back";
    for (int i = 0; i <= NKGET; i++) {
        const struct kgetter *g = i < NKGET ? &KGET[i] : &KG_SLACK;
        long v;
        if (!c->ks->has[i])
            continue;
        if (ks_get(c, g, &v) < 0)
            return "reading a prctl setting failed";
        if (v == c->ks->got[i])
            continue;
        if (ks_set(c, g, c->ks->got[i]) < 0 || ks_get(c, g, &v) < 0 || v != c->ks->got[i]) {
            snprintf(c->ks->why, sizeof c->ks->why, "%s could not be put back", g->what);
            return c->ks->why;
        }
    }
    for (int w = 0; w < 3; w++) {
        struct itimerval it;
        if (ks_itimer(c, w, &it) < 0)
            return "reading an interval timer failed";
        /* Worker timers are never armed at the checkpoint (fork does not inherit them):
         * compare armed or not, not the time left. */
        int armed = it.it_value.tv_sec || it.it_value.tv_usec;
        if (!armed && !it.it_interval.tv_sec && !it.it_interval.tv_usec)
            continue;
        struct itimerval zero;
        memset(&zero, 0, sizeof zero);
        if (poke(c, c->scratch, &zero, sizeof zero) < 0 ||
            inject(c, SYS_setitimer, w, (long)c->scratch, 0, 0, &ret) < 0 ||
            ks_itimer(c, w, &it) < 0 || it.it_value.tv_sec || it.it_value.tv_usec ||
            it.it_interval.tv_sec || it.it_interval.tv_usec)
            return "an interval timer (setitimer) could not be disarmed";
    }
    struct rw_altstack alt;
    if (ks_altstack(c, &alt) < 0)
        return "reading the sigaltstack failed";
    if (memcmp(&alt, &c->ks->alt, sizeof alt) != 0) {
        struct rw_altstack put = c->ks->alt;
        put.flags &= ~SS_ONSTACK;
        if (poke(c, c->scratch, &put, sizeof put) < 0 ||
            inject(c, SYS_sigaltstack, (long)c->scratch, 0, 0, 0, &ret) < 0 ||
            ks_altstack(c, &alt) < 0 || memcmp(&alt, &c->ks->alt, sizeof alt) != 0)
            return "the sigaltstack could not be put back";
    }
    return c->ks->madv_fast ? ks_clear_vmflags(c) : ks_undo_vmflags(c);
}

/* After repair(): its injected calls' effects, read from outside. */
const char *kstate_verify_repair(struct ckpt *c) {
    struct pstatus st;
    if (read_status(c->pid, &st) < 0)
        return "reading the worker's status failed";
    if (st.umask != c->st.umask)
        return "the umask is not the checkpoint's after the repair";
    if (st.ign != c->st.ign || st.cgt != c->st.cgt || st.blk != c->st.blk)
        return "the signal dispositions or mask are not the checkpoint's after the repair";
    char buf[4096];
    if (ks_read(c, "status", buf, sizeof buf) < 0 || dec_field(buf, "\nVmLck:") != 0) {
        memset(buf, 0, sizeof buf);
        return "the worker still holds locked memory after munlockall";
    }
    memset(buf, 0, sizeof buf);
    if (!c->plan.nclose && !c->plan.nsetfl)
        return NULL;
    struct saved_fd now[MAX_FDS];
    int n = read_fds(c->pid, now, MAX_FDS);
    if (n != c->nfds)
        return "the descriptors are not the checkpoint's after the repair";
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (int k = 0; k < c->nfds && !ok; k++)
            ok = c->fds[k].fd == now[i].fd && c->fds[k].dev == now[i].dev &&
                 c->fds[k].ino == now[i].ino && c->fds[k].flags == now[i].flags;
        if (!ok)
            return "the descriptors are not the checkpoint's after the repair";
    }
    return NULL;
}
