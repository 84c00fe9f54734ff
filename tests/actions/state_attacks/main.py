"""Changes one piece of per-process kernel state ("set") or reports it ("get").

``{"op": NAME, "do": "set", "secret": S}`` stores a value derived from S where the state
can carry one; ``{"op": NAME, "do": "get"}`` returns what the next request sees;
``{"do": "health"}`` checks that a request still works normally (a 32 MiB allocation,
a fork, CPU time, reading a file). Every call is made with ctypes, as an attacker would.
"""

import ctypes
import hashlib
import os
import resource
import signal
import socket
import struct
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
ulong = ctypes.c_ulong

# Memory of the checkpoint (allocated at import): madvise and mlock target it.
BUF = bytearray(1 << 20)
KEEP: list = []

SYS = {
    "sigaltstack": 131,
    "personality": 135,
    "arch_prctl": 158,
    "set_mempolicy": 238,
    "get_mempolicy": 239,
    "ioprio_set": 251,
    "ioprio_get": 252,
    "unshare": 272,
    "set_robust_list": 273,
    "get_robust_list": 274,
    "landlock_create_ruleset": 444,
    "landlock_restrict_self": 446,
}


def number(secret: str, mod: int) -> int:
    return int(hashlib.sha256(secret.encode()).hexdigest(), 16) % mod


def prctl(*args: int) -> int:
    padded = [*args[1:], 0, 0, 0, 0][:4]
    return libc.prctl(args[0], *(ulong(a) for a in padded))


def prctl_int(option: int) -> int:
    out = ctypes.c_int(-1)
    libc.prctl(option, ulong(ctypes.addressof(out)), ulong(0), ulong(0), ulong(0))
    return out.value


def syscall(name: str, *args) -> int:
    return libc.syscall(ctypes.c_long(SYS[name]), *args)


class Itimerval(ctypes.Structure):
    _fields_ = [(n, ctypes.c_long) for n in ("i_s", "i_us", "v_s", "v_us")]


def setitimer(which: int, seconds: float, interval: float = 0.0) -> None:
    signal.setitimer(which, seconds, interval)


def smaps_flags_of_buf() -> str:
    addr = ctypes.addressof((ctypes.c_char * len(BUF)).from_buffer(BUF))
    with open("/proc/self/smaps") as fh:
        inside = False
        for line in fh:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split(":", 1)[1].strip()
    return ""


def buf_range() -> tuple[int, int]:
    """The whole mapping holding BUF (page aligned)."""
    addr = ctypes.addressof((ctypes.c_char * len(BUF)).from_buffer(BUF))
    with open("/proc/self/maps") as fh:
        for line in fh:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return lo, hi
    raise RuntimeError("BUF is in no mapping")


def heap_range() -> tuple[int, int]:
    with open("/proc/self/maps") as fh:
        for line in fh:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                return lo, hi
    return buf_range()


def madvise_all(advice: int) -> int:
    rc = 0
    for lo, hi in {heap_range(), buf_range()}:
        rc |= libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), advice)
    return rc


def fork_works() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            junk = [str(i) * 3 for i in range(20000)]  # use the heap
            os._exit(0 if len(junk) == 20000 and len(BUF) == 1 << 20 else 3)
        except BaseException:
            os._exit(4)
    return os.waitpid(pid, 0)[1]


def vmlck_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return -1


def filter_prog(rules: list[tuple[int, int]]) -> bytes:
    """A seccomp program: for (nr, errno) return -errno, else allow."""
    ins = [struct.pack("HBBI", 0x20, 0, 0, 0)]  # ld nr
    for nr, err in rules:
        ins.append(struct.pack("HBBI", 0x15, 0, 1, nr))  # jeq nr
        ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | err))  # ret errno
    ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))  # ret allow
    return b"".join(ins)


def install_filter(rules: list[tuple[int, int]]) -> int:
    code = filter_prog(rules)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    pbuf = ctypes.create_string_buffer(prog)
    prctl(38, 1)  # no_new_privs: needed without CAP_SYS_ADMIN
    return prctl(22, 2, ctypes.addressof(pbuf))  # PR_SET_SECCOMP, FILTER


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


# ---- the attacks: name -> (set(secret) -> None, get() -> value) ---------------------


def _rlimit_soft(s):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200 + number(s, 500), hard))


def _rlimit_hard(s):
    lim = 300 + number(s, 200)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(lim, 256), lim))


def _rlimit_core(s):
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    want = 4096 * (1 + number(s, 1000))
    resource.setrlimit(resource.RLIMIT_CORE, (want, max(hard, want) if hard != -1 else hard))


def _personality(s):
    bits = [0x40000, 0x20000, 0x4000000, 0x1000000, 0x2000000]
    val = sum(b for i, b in enumerate(bits) if number(s, 32) >> i & 1) or 0x20000
    syscall("personality", ulong(val))


def _sigaltstack(s):
    size = 65536 + 16 * number(s, 4096)
    stack = ctypes.create_string_buffer(size)
    KEEP.append(stack)
    ss = struct.pack("QiiQ", ctypes.addressof(stack), 0, 0, size)
    KEEP.append(ctypes.create_string_buffer(ss))
    syscall("sigaltstack", ctypes.c_void_p(ctypes.addressof(KEEP[-1])), None)


def _get_sigaltstack():
    old = ctypes.create_string_buffer(24)
    syscall("sigaltstack", None, ctypes.c_void_p(ctypes.addressof(old)))
    sp, flags, _, size = struct.unpack("QiiQ", old.raw)
    return [flags, size]


def _robust(s):
    syscall("set_robust_list", ulong(0x10000 * (1 + number(s, 1000))), ulong(24))


def _get_robust():
    head, size = ctypes.c_ulong(), ctypes.c_size_t()
    syscall("get_robust_list", 0, ctypes.byref(head), ctypes.byref(size))
    return [head.value, size.value]


def _posix_timer(s):
    timer = ctypes.c_void_p()
    sev = ctypes.create_string_buffer(64)
    struct.pack_into("ii", sev, 8, 0, 1)  # sigev_signo 0, sigev_notify SIGEV_NONE
    librt = ctypes.CDLL("librt.so.1", use_errno=True)
    librt.timer_create(1, sev, ctypes.byref(timer))
    spec = struct.pack("qqqq", 0, 0, 1000 + number(s, 1000), 0)
    librt.timer_settime(timer, 0, ctypes.create_string_buffer(spec), None)


def _get_posix_timers():
    with open("/proc/self/timers") as fh:
        return fh.read().count("ID:")


def _write_proc(name, text):
    with open(f"/proc/self/{name}", "w") as fh:
        fh.write(text)


def _read_proc(name):
    with open(f"/proc/self/{name}") as fh:
        return fh.read().strip()


def _landlock(s):
    attr = struct.pack("Q", 1 << 2)  # handled_access_fs = READ_FILE, no rule: deny all
    ruleset = syscall("landlock_create_ruleset", ctypes.create_string_buffer(attr), 8, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    prctl(38, 1)
    if syscall("landlock_restrict_self", ruleset, 0) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")


def _get_landlock():
    try:
        with open("/etc/hostname") as fh:
            fh.read()
        return "readable"
    except OSError as exc:
        return f"denied: {exc.errno}"


def _mempolicy(s):
    mask = ctypes.c_ulong(1)
    syscall("set_mempolicy", 2 + number(s, 2), ctypes.byref(mask), 64)  # BIND or INTERLEAVE


def _get_mempolicy():
    mode = ctypes.c_int(-1)
    syscall("get_mempolicy", ctypes.byref(mode), None, 0, None, 0)
    return mode.value


def _uts(s):
    if syscall("unshare", 0x04000000) < 0:  # CLONE_NEWUTS
        raise OSError(ctypes.get_errno(), "unshare")
    name = s[:32].encode()
    libc.sethostname(name, len(name))


def _seccomp(s):
    if install_filter([(110, 1 + number(s, 100))]) != 0:  # getppid -> -errno
        raise OSError(ctypes.get_errno(), "seccomp")


def _get_seccomp():
    rc = libc.getppid()  # glibc returns the raw result: -errno under the filter
    return min(rc, 0)


def _pgrp(s):
    if os.getpgrp() == os.getpid():  # a group leader already: join the parent's group
        os.setpgid(0, os.getpgid(os.getppid()))
    else:
        os.setpgid(0, 0)


def _mlockall(s):
    libc.mlockall(2)  # MCL_FUTURE


def _get_mlock():
    try:
        big = bytearray(32 << 20)
        big[::4096] = b"x" * len(big[::4096])
        ok = True
    except MemoryError:
        ok = False
    return {"allocated": ok, "locked": vmlck_kb() > 0}


def _mlock(s):
    lo, hi = buf_range()
    libc.mlock(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo))


def _sched(s):
    policy = os.SCHED_IDLE if number(s, 2) else os.SCHED_BATCH
    os.sched_setscheduler(0, policy | os.SCHED_RESET_ON_FORK, os.sched_param(0))


def _ioprio(s):
    syscall("ioprio_set", 1, 0, (2 << 13) | number(s, 8))


ATTACKS = {
    "rlimit_soft": (_rlimit_soft, lambda: resource.getrlimit(resource.RLIMIT_NOFILE)),
    "rlimit_hard": (_rlimit_hard, lambda: resource.getrlimit(resource.RLIMIT_NOFILE)),
    "rlimit_core": (_rlimit_core, lambda: resource.getrlimit(resource.RLIMIT_CORE)),
    "affinity": (
        lambda s: os.sched_setaffinity(0, {number(s, 2)}),
        lambda: sorted(os.sched_getaffinity(0)),
    ),
    "nice": (
        lambda s: os.setpriority(os.PRIO_PROCESS, 0, 1 + number(s, 19)),
        lambda: os.getpriority(os.PRIO_PROCESS, 0),
    ),
    "comm": (
        lambda s: prctl(15, ctypes.addressof(ctypes.create_string_buffer(s[:15].encode()))),
        lambda: _read_proc("comm"),
    ),
    "personality": (_personality, lambda: syscall("personality", ulong(0xFFFFFFFF))),
    "timerslack": (lambda s: prctl(29, 1000 + number(s, 10**6)), lambda: prctl(30)),
    "pdeathsig": (lambda s: prctl(1, 1 + number(s, 30)), lambda: prctl_int(2)),
    "subreaper": (lambda s: prctl(36, 1), lambda: prctl_int(37)),
    "thp_disable": (lambda s: prctl(41, 1), lambda: prctl(42)),
    "mdwe": (lambda s: prctl(65, 1), lambda: prctl(66)),
    "tsc": (lambda s: prctl(26, 2), lambda: prctl_int(25)),
    "cpuid": (lambda s: syscall("arch_prctl", 0x1012, 0), lambda: syscall("arch_prctl", 0x1011, 0)),
    "mce_kill": (lambda s: prctl(33, 1, 1), lambda: prctl(34)),
    "keepcaps": (lambda s: prctl(8, 1), lambda: prctl(7)),
    "securebits": (lambda s: prctl(28, 1), lambda: prctl(27)),
    "dumpable": (lambda s: prctl(4, 0), lambda: prctl(3)),
    "no_new_privs": (lambda s: prctl(38, 1), lambda: prctl(39)),
    "speculation": (lambda s: prctl(53, 0, 4), lambda: prctl(52, 0)),
    "futex_hash": (lambda s: prctl(78, 1, 2 << number(s, 5)), lambda: prctl(78, 2)),
    "io_flusher": (lambda s: prctl(57, 1), lambda: prctl(58)),
    "ksm": (lambda s: prctl(67, 1), lambda: prctl(68)),
    "capbset": (lambda s: prctl(24, 22), lambda: prctl(23, 22)),
    "sigaltstack": (_sigaltstack, _get_sigaltstack),
    "robust_list": (_robust, _get_robust),
    "itimer_real": (
        lambda s: setitimer(signal.ITIMER_REAL, 10000 + number(s, 1000)),
        lambda: round(signal.getitimer(signal.ITIMER_REAL)[0], -1),
    ),
    "itimer_prof": (
        lambda s: setitimer(signal.ITIMER_PROF, 10000 + number(s, 1000)),
        lambda: round(signal.getitimer(signal.ITIMER_PROF)[0], -1),
    ),
    # No handler: SIGVTALRM kills whoever burns 0.2 s of CPU next.
    "itimer_virtual": (
        lambda s: setitimer(signal.ITIMER_VIRTUAL, 0.2),
        lambda: burn(0.5) or "survived",
    ),
    "posix_timer": (_posix_timer, _get_posix_timers),
    "sched_policy": (_sched, lambda: os.sched_getscheduler(0)),
    "ioprio": (_ioprio, lambda: syscall("ioprio_get", 1, 0)),
    "oom_score_adj": (
        lambda s: _write_proc("oom_score_adj", str(1 + number(s, 999))),
        lambda: _read_proc("oom_score_adj"),
    ),
    "coredump_filter": (
        lambda s: _write_proc("coredump_filter", hex(number(s, 0x1FF))),
        lambda: _read_proc("coredump_filter"),
    ),
    "mlockall": (_mlockall, _get_mlock),
    "mlock": (_mlock, lambda: vmlck_kb() > 0),
    "wipeonfork": (lambda s: madvise_all(18), fork_works),
    "dontfork": (lambda s: madvise_all(10), fork_works),
    "madv_flags": (lambda s: madvise_all(16 if number(s, 2) else 1), smaps_flags_of_buf),
    "mempolicy": (_mempolicy, _get_mempolicy),
    "seccomp": (_seccomp, _get_seccomp),
    "landlock": (_landlock, _get_landlock),
    "pgrp": (_pgrp, lambda: os.getpgrp() == os.getpid()),
    "uts_namespace": (_uts, socket.gethostname),
}


def health():
    big = bytearray(32 << 20)
    big[::4096] = b"y" * len(big[::4096])
    burn(0.3)
    with open("/etc/hostname") as fh:
        fh.read()
    return {"fork": fork_works(), "allocated": len(big) == 32 << 20}


def main(args):
    do = args.get("do", "get")
    if do == "health":
        return health()
    setter, getter = ATTACKS[args["op"]]
    if do == "set":
        try:
            setter(args["secret"])
            return {"set": True}
        except OSError as exc:
            return {"set": False, "error": exc.errno}
    return {"value": getter()}
