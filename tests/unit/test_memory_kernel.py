"""The REWIND kernel backend's call sequence, driven through a fake syscall layer.

This machine's kernel has no REWIND calls; the fake records what the launcher asks.
"""

import errno
import json
import os
import subprocess
import sys

import pytest

from rewind.memory import kernel as kernel_mod
from rewind.memory.base import ServeContext
from rewind.memory.kernel import KernelBackend, RewindSyscalls
from rewind.request.errors import FailClosed
from rewind.request.protocol import LineReader


class FakeKernel:
    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def _record(self, name):
        self.calls.append(name)
        if name == self.fail_on:
            raise OSError(errno.EIO, "fake failure")

    def rewindable(self):
        self._record("rewindable")

    def checkpoint(self):
        self._record("checkpoint")

    def rewind(self):
        self._record("rewind")


class RecordingFiles:
    def __init__(self, log):
        self.log = log

    def checkpoint(self):
        self.log.append("files.checkpoint")

    def rewind(self):
        self.log.append("files.rewind")

    def fileno(self):
        return None


@pytest.fixture(autouse=True)
def _no_reaping_in_pytest(monkeypatch):
    # The backend makes its process a subreaper and kills its children; in pytest's
    # own process that would reach other tests' processes, so record instead.
    monkeypatch.setattr(kernel_mod, "become_subreaper", lambda: None)
    monkeypatch.setattr(kernel_mod, "kill_descendants", lambda: 0)


def _serve(kernel, requests, files=None):
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    os.close(in_w)

    def main(args):
        kernel.calls.append(f"run {args['n']}")
        return {"n": args["n"]}

    ctx = ServeContext(
        main=main, main_name="main", reader=LineReader(in_r), result_fd=out_w, files=files
    )
    try:
        code = KernelBackend(kernel).serve(ctx)
    finally:
        os.close(out_w)
        os.close(in_r)
    with os.fdopen(out_r, "rb") as fh:
        return code, [json.loads(line) for line in fh]


def test_checkpoint_once_then_rewind_before_every_later_request():
    kernel = FakeKernel()
    log = kernel.calls
    code, results = _serve(kernel, [{"value": {"n": i}} for i in range(3)], RecordingFiles(log))
    assert code == 0
    assert results == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert kernel.calls == [
        "checkpoint",
        "run 0",
        "files.rewind",
        "rewind",
        "run 1",
        "files.rewind",
        "rewind",
        "run 2",
        "files.rewind",
        "rewind",
    ]


def test_a_failed_rewind_fails_closed():
    kernel = FakeKernel(fail_on="rewind")
    with pytest.raises(FailClosed, match="REWIND kernel call failed"):
        _serve(kernel, [{"value": {"n": 0}}, {"value": {"n": 1}}])
    assert kernel.calls == ["checkpoint", "run 0", "rewind"]


# Run in a throwaway process that forks: 550 marks its caller's parent, never pytest.
_PROBE = """
import errno, os, sys
from rewind.memory.kernel import RewindSyscalls
pid = os.fork()
if pid == 0:
    try:
        RewindSyscalls().rewindable()
        os._exit(0)
    except OSError as exc:
        os._exit(1 if exc.errno == errno.ENOSYS else 0)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def _rewind_kernel_present() -> bool:
    """True when this kernel has the REWIND calls (550 answers anything but ENOSYS)."""
    probe = subprocess.run([sys.executable, "-c", _PROBE], timeout=30, check=False)
    return probe.returncode == 0


def test_the_real_calls_report_enosys_on_a_stock_kernel():
    if _rewind_kernel_present():
        pytest.skip("this is a REWIND kernel: its calls do not report ENOSYS")
    calls = RewindSyscalls()
    for fn in (calls.checkpoint, calls.rewind):
        with pytest.raises(OSError) as info:
            fn()
        assert info.value.errno == errno.ENOSYS
