/*
 * The internal header of rewind.memory._inplace: the kernel ABI it needs, the
 * checkpoint record (struct ckpt) and the functions the source files share. Every
 * function that reads or changes a checkpoint takes it as its first argument; the
 * Python bindings (_inplace.c) own it, one per Checkpoint object.
 *
 *   _inplace_maps.c        /proc parsing, and the plan of the repairs from it
 *   _inplace_inject.c      ptrace: stopping the worker, injected system calls, repairs
 *   _inplace_track.c       write tracking: userfaultfd, PAGEMAP_SCAN, the copy back, probe
 *   _inplace_kstate.c      per-process kernel state (limits, prctl flags, timers, ...)
 *   _inplace_checkpoint.c  capture, stop and rewind: the steps above in order
 *   _inplace.c             the Python bindings (Checkpoint, Refused, probe, track, drain)
 */
#ifndef REWIND_INPLACE_H
#define REWIND_INPLACE_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

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
#include <stdio.h>
#include <stdlib.h>
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
#define IOV_BATCH 1024 /* ranges per process_vm_writev */
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
    int special;   /* [vvar], [vdso], [vsyscall]: cannot be registered */
    int stack;     /* [stack] */
    int heap;      /* [heap] */
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

/* The repairs rewind() plans from the worker's maps and descriptors before it
 * injects anything. */
struct plan {
    uintptr_t unmap_start[MAX_REGIONS / 4], unmap_end[MAX_REGIONS / 4];
    int nunmap;
    int reset_brk;
    uintptr_t heap_regrow;         /* after brk is reset, register [heap_regrow, heap_end) */
    int recreate[MAX_REGIONS / 4]; /* checkpoint regions to map again */
    int nrecreate;
    int close_fd[MAX_FDS], nclose;
    int setfl_fd[MAX_FDS], nsetfl;
};

struct kstate; /* per-process kernel state: _inplace_kstate.c */

/* One checkpoint of one worker, and the scratch its rewinds use. */
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
    struct iovec iov_local[IOV_BATCH], iov_remote[IOV_BATCH];
    struct plan plan;  /* of the rewind in progress */
    char reason[160];  /* a formatted refusal */
    struct kstate *ks; /* recorded at the checkpoint, its own mapping */
};

extern long page_size;

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* _inplace_maps.c */
int read_file_into(const char *path, char *buf, size_t cap, size_t *len);
unsigned long long hex_at(const char **p);
unsigned long long dec_at(const char **p);
int parse_maps(struct ckpt *c, pid_t pid, struct region *out, char *pool, uint32_t *pool_used);
int same_region(const struct region *a, const char *apool, const struct region *b,
                const char *bpool);
long dec_field(const char *buf, const char *key);
int read_status(pid_t pid, struct pstatus *st);
int read_fds(pid_t pid, struct saved_fd *out, int cap);
int read_children(pid_t pid, pid_t *out, int cap);
int is_tracked(const struct region *r);
int find_region(const struct region *rs, int n, uintptr_t addr);
const char *plan_maps(struct ckpt *c);
const char *plan_fds(struct ckpt *c);
const char *check_kernel_state(struct ckpt *c, const struct pstatus *st);

/* _inplace_inject.c */
int wait_stop(struct ckpt *c, int *status);
int seize_stop(struct ckpt *c, pid_t pid);
int detach(struct ckpt *c);
int inject6(struct ckpt *c, long nr, long a1, long a2, long a3, long a4, long a5, long a6,
            long *ret);
int inject(struct ckpt *c, long nr, long a1, long a2, long a3, long a4, long *ret);
int put_registers(struct ckpt *c);
int poke(struct ckpt *c, uintptr_t addr, const void *data, size_t len);
const char *repair_maps(struct ckpt *c);
const char *repair(struct ckpt *c, const struct pstatus *st);

/* _inplace_track.c */
int protect(struct ckpt *c, uintptr_t start, uintptr_t end);
const char *check_found(struct ckpt *c);
const char *restore_memory(struct ckpt *c);
const char *scan_or_refuse(struct ckpt *c, int writable);
const char *track_probe(int *err_out);
int track_self(const char **what);

/* _inplace_kstate.c */
void ks_release(struct ckpt *c);
int kstate_capture(struct ckpt *c, const char **what);
const char *kstate_check_identity(struct ckpt *c);
const char *kstate_restore_outside(struct ckpt *c);
const char *kstate_restore_injected(struct ckpt *c);
const char *kstate_verify_repair(struct ckpt *c);

/* _inplace_checkpoint.c */
void ckpt_free(struct ckpt *c);
int ckpt_capture(pid_t pid, int gate_fd, int worker_uffd, struct ckpt **out, const char **what);
const char *ckpt_stop(struct ckpt *c);
const char *ckpt_rewind(struct ckpt *c);
int ckpt_tracked(const struct ckpt *c);

#endif
