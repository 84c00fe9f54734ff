"""The in-place extension in a subprocess: checkpoint, mutate everything, rewind, compare."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rewind.memory.inplace import available

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, mmap, os, signal
    from rewind.memory import _inplace
    G = {"n": 0}
    HEAP = bytearray(8 << 20)
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    state = {}
    def snap():
        return {
            "g": dict(G), "heap": bytes(HEAP[:8192]).count(0), "cwd": os.getcwd(),
            "umask": os.umask(0o22), "fds": sorted(os.listdir("/proc/self/fd")),
            "sig": str(signal.getsignal(signal.SIGUSR1)),
            "maps": len(open("/proc/self/maps").readlines()),
        }
    resumed = _inplace.checkpoint()
    now = snap()
    os.umask(now["umask"])
    path = os.environ["MARK"]
    with open(path, "a") as fh:
        fh.write(json.dumps(now) + "\\n")
    if sum(1 for _ in open(path)) >= 3:
        os._exit(0)
    G["n"] += 1
    G["secret"] = "s" * 4096
    HEAP[:8192] = b"x" * 8192
    keep = [mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE) for _ in range(4)]
    libc.sbrk(1 << 20)
    os.open("/etc/hostname", os.O_RDONLY)
    os.chdir("/")
    os.umask(0)
    signal.signal(signal.SIGUSR1, lambda *a: None)
    _inplace.kill_threads(1.0)
    _inplace.rewind()
    """
)


@pytest.mark.skipif(not available()[0], reason=available()[1])
def test_rewind_puts_globals_heap_mappings_brk_fds_cwd_umask_signals_back(tmp_path):
    mark = tmp_path / "states"
    env = {"MARK": str(mark), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()
    states = mark.read_text().splitlines()
    assert len(states) == 3
    assert states[0] == states[1] == states[2]


def test_available_says_why_not_when_it_is_not():
    ok, why = available()
    assert ok or why
