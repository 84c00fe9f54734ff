"""The in-place extension driven directly: a forked worker, captured, mutated, rewound.

This test process plays the snapshot process. The worker reports a snapshot of its
state after every rewind; it must equal the first one whatever the request changed,
and changes a rewind cannot undo must be refused (a reason), never half-applied.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import resource
import signal
import struct
import threading
import time

import pytest

from rewind.memory.inplace import available

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not available()[0], reason=available()[1])]

libc = ctypes.CDLL(None, use_errno=True)
libc.sbrk.restype = ctypes.c_void_p
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = mmap.PAGESIZE


def _snapshot(g: dict, heap: bytearray, spare: int) -> bytes:
    with open("/proc/self/maps") as fh:
        maps = len(fh.readlines())
    umask = os.umask(0o22)
    os.umask(umask)
    state = {
        "g": g,
        "heap_x": heap.count(b"x"[0]),
        "umask": umask,
        "fds": sorted(os.listdir("/proc/self/fd")),
        "usr1": str(signal.getsignal(signal.SIGUSR1)),
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "maps": maps,
        "cwd": os.getcwd(),
        "spare": ctypes.string_at(spare, 4 * PAGE).count(1),
        "kernel": _kernel_state(heap),
    }
    return json.dumps(state).encode().ljust(4095) + b"\n"


def _prctl(*args: int) -> int:
    return libc.prctl(*(ctypes.c_ulong(a) for a in [*args, 0, 0, 0, 0][:5]))


def _prctl_int(option: int) -> int:
    out = ctypes.c_int(-1)
    _prctl(option, ctypes.addressof(out))
    return out.value


def _heap_flags(heap: bytearray) -> str:
    addr = ctypes.addressof((ctypes.c_char * len(heap)).from_buffer(heap))
    with open("/proc/self/smaps") as fh:
        inside = False
        for line in fh:
            head = line.split()[0]
            if "-" in head and line[0] in "0123456789abcdef":
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split(":", 1)[1].strip()
    return ""


def _kernel_state(heap: bytearray) -> dict:
    """What the worker can change on itself besides memory, fds and signals. Read with
    no system call that the state itself changes (TSC: no clock read)."""
    with open("/proc/self/comm") as fh:
        comm = fh.read()
    old = ctypes.create_string_buffer(24)
    libc.syscall(131, None, old)  # sigaltstack
    robust, size = ctypes.c_ulong(), ctypes.c_size_t()
    libc.syscall(274, 0, ctypes.byref(robust), ctypes.byref(size))
    return {
        "comm": comm,
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "cpus": sorted(os.sched_getaffinity(0)),
        "personality": libc.syscall(135, ctypes.c_ulong(0xFFFFFFFF)),
        "slack": _prctl(30),
        "tsc": _prctl_int(25),
        "pdeathsig": _prctl_int(2),
        "subreaper": _prctl_int(37),
        "timers": [signal.getitimer(w)[0] > 0 for w in (0, 1, 2)],
        "altstack": old.raw.hex(),
        "robust": [robust.value, size.value],
        "heap_flags": _heap_flags(heap),
        "vmlck": [x for x in open("/proc/self/status") if x.startswith("VmLck")],
    }


def _mutate(how: str, g: dict, heap: bytearray, spare: int) -> None:
    if how == "everything":
        g["n"] += 1
        g["secret"] = "s" * 4096
        heap[: 8 * PAGE] = b"x" * (8 * PAGE)
        g["keep"] = [mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE) for _ in range(4)]
        libc.sbrk(1 << 20)
        os.open("/etc/hostname", os.O_RDONLY)
        os.umask(0)
        signal.signal(signal.SIGUSR1, lambda *a: None)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
        # A checkpoint mapping goes away, as when malloc or Python frees an arena.
        assert libc.munmap(spare, 4 * PAGE) == 0
    elif how == "kernel_state":
        # Every setting a process may change on itself that the rewind puts back.
        libc.prctl(15, b"S3CR3T-name", 0, 0, 0)  # PR_SET_NAME
        resource.setrlimit(resource.RLIMIT_NOFILE, (123, resource.getrlimit(7)[1]))
        os.setpriority(os.PRIO_PROCESS, 0, 7)
        os.sched_setaffinity(0, {0})
        libc.syscall(135, ctypes.c_ulong(0x0040000))  # personality(ADDR_NO_RANDOMIZE)
        _prctl(29, 4242)  # timer slack
        _prctl(1, 9)  # parent-death signal
        _prctl(36, 1)  # child subreaper
        signal.setitimer(signal.ITIMER_VIRTUAL, 0.05)  # would kill the next request
        signal.setitimer(signal.ITIMER_REAL, 1000)
        stack = ctypes.create_string_buffer(1 << 16)
        g["stack"] = stack
        libc.syscall(131, struct.pack("QiiQ", ctypes.addressof(stack), 0, 0, 1 << 16), None)
        libc.syscall(273, ctypes.c_ulong(0x123000), ctypes.c_ulong(24))  # set_robust_list
        addr = ctypes.addressof((ctypes.c_char * len(heap)).from_buffer(heap)) & ~(PAGE - 1)
        assert libc.madvise(ctypes.c_void_p(addr), PAGE * 16, 18) == 0  # MADV_WIPEONFORK
        assert libc.mlock(ctypes.c_void_p(addr), PAGE * 16) == 0
        libc.mlockall(2)  # MCL_FUTURE
    elif how == "seccomp":
        # A filter that makes the injected calls of a rewind "succeed" without effect.
        prog = b"".join(
            [struct.pack("HBBI", 0x20, 0, 0, 0)]
            + [
                struct.pack("HBBI", 0x15, 0, 1, nr) + struct.pack("HBBI", 0x06, 0, 0, 0x50000)
                for nr in (3, 95, 13, 11, 12)  # close, umask, rt_sigaction, munmap, brk
            ]
            + [struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)]
        )
        code = ctypes.create_string_buffer(prog)
        fprog = ctypes.create_string_buffer(
            struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(code))
        )
        os.open("/etc/hostname", os.O_RDONLY)
        assert _prctl(22, 2, ctypes.addressof(fprog)) == 0
    elif how == "thread":
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    elif how == "chdir":
        os.chdir("/")
    elif how == "patch_code":
        # Make a page of libc's code writable, write it back unchanged, re-protect it:
        # the layout looks untouched, but code pages were written.
        addr = ctypes.cast(libc.getpid, ctypes.c_void_p).value or 0
        page = addr & ~(PAGE - 1)
        assert libc.mprotect(page, PAGE, 7) == 0
        ctypes.memmove(page, page, 16)
        assert libc.mprotect(page, PAGE, 5) == 0
    elif how == "replace_mapping":
        # Unmap a tracked mapping and map a fresh one at the same place: same layout,
        # but the kernel no longer tracks writes there.
        assert libc.munmap(spare, 4 * PAGE) == 0
        got = libc.mmap(spare, 4 * PAGE, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x10, -1, 0)
        assert got == spare
        ctypes.memset(spare, 0x41, 4 * PAGE)


def _worker(ext, how: str, gate_r: int, cmd_r: int, rep_w: int) -> None:
    g = {"n": 0}
    heap = bytearray(8 << 20)
    # Four pages between PROT_NONE guards: a mapping of its own, merged with nothing.
    base = libc.mmap(None, 6 * PAGE, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    spare = base + PAGE
    assert libc.mprotect(spare, 4 * PAGE, 3) == 0
    ctypes.memset(spare, 1, 4 * PAGE)
    uffd = ext.track()
    os.write(rep_w, b"R%7d" % uffd)
    os.read(gate_r, 1)  # the checkpoint
    os.write(rep_w, _snapshot(g, heap, spare))
    os.read(cmd_r, 1)
    _mutate(how, g, heap, spare)
    os.write(rep_w, b"M")
    while True:
        signal.pause()


def _read(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        assert chunk, "the worker went away"
        out += chunk
    return out


@pytest.fixture
def worker():
    """Start a worker doing ``how`` per request; yield (ext, pid, run); clean up."""
    from rewind.memory import _inplace as ext

    started: list[int] = []
    ckpt = ext.Checkpoint()

    def start(how: str):
        gate_r, gate_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _worker(ext, how, gate_r, cmd_r, rep_w)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(70)
        started.append(pid)
        for fd in (gate_r, cmd_r, rep_w):
            os.close(fd)
        ready = _read(rep_r, 8)
        assert ready.startswith(b"R")
        # Descriptor numbers as the worker has them (it inherited ours).
        figures = ckpt.capture(pid, gate_r, int(ready[1:]))
        assert figures["tracked"] > 0 and figures["backup_bytes"] >= 8 << 20

        def request() -> tuple[dict, object]:
            os.write(gate_w, b"g")
            snap = json.loads(_read(rep_r, 4096))
            os.write(cmd_w, b"c")
            assert _read(rep_r, 1) == b"M"
            ckpt.stop()
            try:
                return snap, ckpt.rewind()
            except ext.Refused as exc:
                return snap, exc

        return request

    yield ext, start
    ckpt.release()
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_rewind_puts_memory_mappings_brk_fds_umask_signals_and_mask_back(worker):
    ext, start = worker
    request = start("everything")
    first, result = request()
    assert isinstance(result, dict), result
    assert result["pages"] >= 8 and result["injected"] >= 5  # munmaps, brk, close, ...
    for _ in range(3):
        again, result = request()
        assert isinstance(result, dict), result
        assert again == first  # n back to 0, no secret, heap clean, same fds and maps
    assert first["g"] == {"n": 0} and first["heap_x"] == 0


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("chdir", ("working directory",)),
        # Re-protecting splits the code mapping; writing it is caught either way.
        ("patch_code", ("read-only memory", "re-protected", "lost its write tracking")),
        ("replace_mapping", ("a tracked mapping was replaced", "lost its write tracking")),
    ],
)
def test_what_a_rewind_cannot_undo_is_refused_not_half_done(worker, how, reason):
    ext, start = worker
    request = start(how)
    _, result = request()
    assert isinstance(result, ext.Refused) and any(r in str(result) for r in reason), result


def test_per_process_kernel_state_is_put_back_and_read_again(worker):
    ext, start = worker
    request = start("kernel_state")
    first, result = request()
    assert isinstance(result, dict), result
    for _ in range(2):
        again, result = request()
        assert isinstance(result, dict), result
        assert again == first
    kernel = first["kernel"]
    assert "S3CR3T" not in kernel["comm"] and kernel["timers"] == [False] * 3
    assert "wf" not in kernel["heap_flags"] and "lo" not in kernel["heap_flags"]


def test_a_new_seccomp_filter_replaces_the_worker_before_anything_is_injected(worker):
    ext, start = worker
    request = start("seccomp")
    _, result = request()
    assert isinstance(result, ext.Refused), result
    assert str(result).startswith("the request changed the worker's Seccomp"), result


# What the worker's own filter refuses it (EPERM): settings with no outside view that no
# function needs. Each is (syscall number, arguments).
REFUSED = {
    "landlock_restrict_self": (446, [-1, 0]),
    "syscall user dispatch": (157, [59, 1, 0, 0, 0]),
    "TSC faulting": (157, [26, 2]),
    "machine-check kill policy": (157, [33, 1, 1]),
    "IO flusher": (157, [57, 1]),
    "memory-deny-write-execute": (157, [65, 1]),
    "futex hash size": (157, [78, 1, 16, 0]),
    "securebits": (157, [28, 1]),
    "keepcaps": (157, [8, 1]),
    "CPUID faulting": (158, [0x1012, 0]),
}


def test_the_worker_may_not_make_settings_no_rewind_could_see():
    from rewind.memory import _inplace as ext

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter track() installs, in a child of this test process
        try:
            ext.track()
            got = {}
            for name, (nr, args) in REFUSED.items():
                rc = libc.syscall(nr, *(ctypes.c_long(a) for a in args))
                got[name] = [rc, ctypes.get_errno()]
            # Not over-broad: the name, the timer slack and CPUID reads still work.
            got["name"] = libc.prctl(15, b"still-works", 0, 0, 0)
            got["slack"] = _prctl(29, 60000)
            got["cpuid"] = libc.syscall(158, ctypes.c_long(0x1011), ctypes.c_long(0))
            os.write(w, json.dumps(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = json.loads(_read(r, 1) + os.read(r, 65536))
    os.waitpid(pid, 0)
    assert {k: v for k, v in got.items() if k in REFUSED} == {k: [-1, 1] for k in REFUSED}
    assert got["name"] == 0 and got["slack"] == 0 and got["cpuid"] == 1


def test_a_worker_with_threads_is_refused_before_the_reply(worker):
    ext, start = worker
    request = start("thread")
    with pytest.raises(ext.Refused, match="threads"):
        request()
