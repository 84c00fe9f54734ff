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
import signal
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
    }
    return json.dumps(state).encode().ljust(4095) + b"\n"


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
        figures = ext.capture(pid, gate_r, int(ready[1:]))
        assert figures["tracked"] > 0 and figures["backup_bytes"] >= 8 << 20

        def request() -> tuple[dict, object]:
            os.write(gate_w, b"g")
            snap = json.loads(_read(rep_r, 4096))
            os.write(cmd_w, b"c")
            assert _read(rep_r, 1) == b"M"
            problem = ext.stop()
            assert problem is None, problem
            return snap, ext.rewind()

        return request

    yield ext, start
    ext.release()
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
    assert isinstance(result, str) and any(r in result for r in reason), result


def test_a_worker_with_threads_is_refused_before_the_reply(worker):
    ext, start = worker
    request = start("thread")
    with pytest.raises(AssertionError, match="threads"):
        request()
