"""Named wrappers for the few Linux calls Python's os module lacks (any process).

Raw syscall numbers never appear elsewhere in the code base.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def prctl(option: int, arg: int, arg2: int = 0) -> None:
    """prctl(2) with one or two arguments; raises OSError on failure."""
    if _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg2), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def raw_syscall(number: int, *args: int) -> int:
    """Make system call ``number``; raises OSError with the errno on failure."""
    ret = _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capabilities() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) capability sets as bit masks."""
    hdr = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    lo, hi = data[0], data[1]
    return (
        lo.effective | hi.effective << 32,
        lo.permitted | hi.permitted << 32,
        lo.inheritable | hi.inheritable << 32,
    )


def set_capabilities(effective: int, permitted: int, inheritable: int = 0) -> None:
    """capset(2) for this thread; dropping a capability from permitted is for good."""
    hdr = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def clear_ambient_capabilities() -> None:
    """Empty the ambient set, so that no program this process execs inherits a capability."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp_filter(program: bytes) -> None:
    """Set no_new_privs and install a classic-BPF seccomp filter (8 bytes an instruction).

    Filters are inherited by every child and survive execve; none can be removed.
    """
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def set_dumpable(flag: bool) -> None:
    """Non-dumpable processes cannot be ptraced or have /proc/PID/fd opened by peers."""
    prctl(PR_SET_DUMPABLE, 1 if flag else 0)


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def prefer_for_oom_kill() -> None:
    """Make this process the out-of-memory killer's first choice (oom_score_adj 1000).

    Request processes call it: under memory pressure the request that caused it fails,
    not the proxy, the sidecar or the snapshot process (raising needs no privilege). A
    non-dumpable process's /proc files belong to root, so the caller must be dumpable
    here (a fresh request process holds no request data yet) and may drop it after.
    """
    set_dumpable(True)
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write("1000")
    except OSError:
        pass  # no /proc: the kernel's default choice stands


def become_subreaper() -> None:
    """Orphaned descendants re-parent to this process instead of PID 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def thread_count() -> int:
    """Number of threads of this process, from /proc/self/task."""
    return len(os.listdir("/proc/self/task"))


def child_pids() -> list[int]:
    """Direct children of every thread of this process."""
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as fh:
                pids.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            continue
    return pids


def shared_writable_mappings() -> list[str]:
    """Shared writable mappings of this process ("anonymous" or their path).

    Writes to them reach every process that maps them: a forked child's writes reach
    the snapshot process and the children after it, and no rewind undoes them.
    """
    found = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split(None, 5)
            perms = fields[1]
            if perms[1] == "w" and perms[3] == "s":
                found.append(fields[5].strip() if len(fields) > 5 else "anonymous")
    return found
