"""The inplace backend: one long-lived request process, rewound in place from outside.

After the checkpoint the launcher becomes the snapshot process, as with fork: it never
runs action code and never reads request or result bytes. It forks one worker, which
registers its memory for write tracking (userfaultfd WP_ASYNC) and blocks reading a
private gate pipe: that instant is the checkpoint, which the snapshot process captures
with ptrace (registers, descriptors, signal state, mappings, a copy of the writable
memory). The worker then serves a request exactly like a fork child (it reads stdin
itself, writes its result to a memfd), but instead of exiting it is stopped, and the
snapshot process puts it back with the C extension ``rewind.memory._inplace``: system
calls injected into the stopped worker repair kernel state, PAGEMAP_SCAN lists the
written pages, /proc/PID/mem writes them back, and the registers are reset so the
worker re-enters its gate read. Nothing in the worker, which may be hostile by then,
takes part in its own rewind.

Whatever cannot be put back exactly makes the snapshot process kill the worker and
fork a new one (the request is answered first); after MAX_REFORKS_IN_A_ROW such
requests in a row it serves the rest of its life with the fork backend, and says why.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import resource
import signal
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

from rewind.memory import identity, keyrings, sysapi
from rewind.memory.base import ServeContext, exited_line
from rewind.memory.child import (
    READING,
    TOOK,
    decode_started,
    encode_started,
    harden,
    prewarm,
    wait_for_request,
)
from rewind.memory.fork import fork_backend
from rewind.memory.supervise import (
    ACTION_EXITED,
    MALFORMED,
    Outcome,
    StdinLost,
    describe_failure,
    forward_one_line,
    kill_descendants,
    poll_readable,
)
from rewind.request import errors
from rewind.request.action import deadline_in, flush_logs, parse_request, run_parsed
from rewind.request.errors import EXIT_OK, FailClosed
from rewind.request.protocol import write_all

# The "started" record has a fixed size, so the snapshot process reads exactly the
# trusted bytes and never what the action may write after them.
STARTED_LEN = 64
READY_LEN = 8  # "R" and the worker's userfaultfd number
MAX_REFORKS_IN_A_ROW = 3


def _extension() -> tuple[ModuleType | None, str]:
    try:
        ext = importlib.import_module("rewind.memory._inplace")
    except ImportError as exc:
        return None, f"the C extension rewind.memory._inplace is not built ({exc})"
    return ext, ""


def available() -> tuple[bool, str]:
    """(True, "") when in-place rewind can work in this process, else (False, why)."""
    ext, why = _extension()
    if ext is None:
        return False, why
    with identity.acting_as_function(children_too=True):  # the probe ptraces a child
        problem = ext.probe()
    if problem is not None:
        return False, str(problem) + (
            "; in Docker, run with a seccomp profile that allows userfaultfd "
            "(see docs/MEMORY-INPLACE.md)"
        )
    threads = sysapi.thread_count()
    if threads != 1:
        return False, f"{threads} threads are alive at the checkpoint (it needs exactly one)"
    return True, ""


def _debug(ctx: ServeContext, msg: str) -> None:
    """Log only under REWIND_DEBUG/OW_DEBUG: the log lands in the next activation's
    stderr, and why a worker was replaced tells that request what the previous one did."""
    if ctx.debug:
        ctx.log(msg)


def _pad_started(record: bytes) -> bytes:
    return record.rstrip(b"\n").ljust(STARTED_LEN - 1) + b"\n"


def worker_main(
    ctx: ServeContext, ext: ModuleType, memfd: int, status_w: int, gate_r: int, close: list[int]
) -> NoReturn:
    """The worker: checkpoint at the gate read, then serve one request per rewind."""
    code = errors.CHILD_INTERNAL_ERROR
    try:
        harden(close)
        # The snapshot process attaches with ptrace at every rewind, as our parent and
        # same user: we must stay dumpable. Core dumps could hold request data: none.
        sysapi.set_dumpable(True)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        prewarm()
        uffd = ext.track()
        os.write(status_w, b"R" + str(uffd).encode().rjust(READY_LEN - 1))
        os.read(gate_r, 1)  # the checkpoint: every rewind resumes inside this read
        keyrings.start_clean()  # per request: this worker keeps its keyrings otherwise
        random.seed()  # every rewind returns to the same state: draw a fresh seed
        wait_for_request(ctx.reader.fd)
        os.write(status_w, READING)
        line = ctx.reader.read_line()
        if line is None:
            _exit(errors.CHILD_STDIN_EOF)
        os.write(status_w, TOOK)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        parsed = parse_request(line)  # once, for the deadline and for the action
        del line
        write_all(status_w, _pad_started(encode_started(deadline_in(parsed[0]), faults)))
        try:
            out = run_parsed(ctx.main, parsed)
            marker = b"D"
        except (SystemExit, KeyboardInterrupt):
            out, marker = b"", b"X"
        del parsed
        write_all(memfd, out)
        flush_logs()
        os.write(status_w, marker)
        while True:  # the snapshot process stops us here and rewinds us to the gate
            signal.pause()
    except BaseException:
        import traceback

        traceback.print_exc()
    _exit(code)


def _exit(code: int) -> NoReturn:
    flush_logs()
    os._exit(code)


def _read_exact(fd: int, n: int) -> bytes:
    """Up to n bytes from a blocking pipe; fewer only when the writer is gone."""
    got = b""
    while len(got) < n:
        chunk = os.read(fd, n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def _minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (field 10 of /proc/PID/stat), or 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


def _own_children() -> list[int]:
    """Children of this process, which is single-threaded (inplace requires it)."""
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children", "rb") as fh:
        return [int(p) for p in fh.read().split()]


def _reap(pid: int) -> int:
    """Wait for the worker to be gone (past any ptrace stop); return its status."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return status


def _discard(pid: int) -> None:
    """Kill and reap the worker; it may be gone already (a stop can reap it)."""
    identity.send_signal([pid], signal.SIGKILL)
    _reap(pid)


def kill_orphans(worker: int | None) -> int:
    """Kill and reap every process a request left, except the (stopped) worker."""
    return kill_descendants(keep=worker, children=_own_children)


class CaptureFailed(Exception):
    """The worker could not be checkpointed (the reason is the message)."""


@dataclass
class Worker:
    """The snapshot process's handles on its worker."""

    pid: int
    pidfd: int
    memfd: int
    status_r: int
    gate_w: int
    ckpt: Any  # its _inplace.Checkpoint

    def close(self) -> None:
        for fd in (self.pidfd, self.memfd, self.status_r, self.gate_w):
            os.close(fd)


def _stop(ext: ModuleType, w: Worker) -> str | None:
    """Stop the worker after its request: None, or why it must be replaced."""
    try:
        w.ckpt.stop()
    except ext.Refused as exc:
        return str(exc)
    return None


@dataclass
class _Taken:
    """A request the worker took: its deadline and the page faults it had taken before."""

    deadline: float | None
    faults_before: int


def _record(
    ctx: ServeContext, result: dict[str, float], after_reply_ms: float, files_ms: float, faults: int
) -> None:
    """One metrics line of an in-place rewind (REWIND_METRICS_FILE)."""
    ctx.record(
        after_reply_ms=after_reply_ms,
        files_ms=files_ms,
        rewind_ms=result["ms"],
        check_ms=result["check_ms"],
        scan_ms=result["scan_ms"],
        repair_ms=result["repair_ms"],
        restore_ms=result["restore_ms"],
        pages=result["pages"],
        injected=result["injected"],
        request_faults=faults,
    )


class InplaceBackend:
    """Serve requests in one worker process, rewinding it in place after every reply."""

    name = "inplace"

    def __init__(self) -> None:
        self.reforks_in_a_row = 0

    def serve(self, ctx: ServeContext) -> int:
        """Answer requests until the proxy closes stdin (runs in the launcher)."""
        ext, why = _extension()
        if ext is None:
            raise FailClosed(why)
        identity.become_snapshot()
        sysapi.set_dumpable(False)
        sysapi.become_subreaper()
        gc.collect()
        gc.freeze()  # keep collector writes off the pages the worker shares with us
        worker: Worker | None = None
        while True:
            if worker is None:
                if self.reforks_in_a_row >= MAX_REFORKS_IN_A_ROW:
                    _debug(
                        ctx,
                        f"inplace: {self.reforks_in_a_row} requests in a row could not be "
                        "rewound in place; serving with fork from now on",
                    )
                    return fork_backend().serve(ctx)
                try:
                    worker = self._start(ctx, ext)
                except CaptureFailed as exc:
                    _debug(ctx, f"inplace: no checkpoint ({exc}); serving with fork instead")
                    return fork_backend().serve(ctx)
            try:
                worker, more = self._serve_one(ctx, ext, worker)
            except StdinLost as exc:
                _debug(ctx, f"inplace: {exc}; the proxy starts a new launcher")
                return errors.EXIT_STDIN_LOST
            if not more:
                return EXIT_OK

    def _start(self, ctx: ServeContext, ext: ModuleType) -> Worker:
        memfd = os.memfd_create("rewind-result")
        status_r, status_w = os.pipe()
        gate_r, gate_w = os.pipe()
        close = [ctx.result_fd, status_r, gate_w]
        for fd in (
            ctx.files.fileno() if ctx.files is not None else None,
            ctx.metrics_fd,
            ctx.status_fd,
        ):
            if fd is not None:
                close.append(fd)
        pid = os.fork()
        if pid == 0:
            worker_main(ctx, ext, memfd, status_w, gate_r, close)
        os.close(status_w)
        os.close(gate_r)
        w = Worker(pid, os.pidfd_open(pid), memfd, status_r, gate_w, ext.Checkpoint())
        ready = _read_exact(status_r, READY_LEN)
        if len(ready) != READY_LEN or not ready.startswith(b"R"):
            status = _reap(pid)
            w.close()
            raise CaptureFailed(f"the worker did not start (status {status})")
        try:
            with identity.acting_as_function():  # only our code runs in the worker yet
                figures = w.ckpt.capture(pid, gate_r, int(ready[1:]))
        except OSError as exc:
            _discard(pid)
            w.close()
            raise CaptureFailed(str(exc)) from None
        if ctx.metrics_fd is not None:
            ctx.record(capture_ms=figures["ms"], backup_mb=figures["backup_bytes"] / 2**20)
        os.write(gate_w, b"g")
        return w

    def _lost(
        self, ctx: ServeContext, ext: ModuleType, w: Worker, timed_out: bool
    ) -> tuple[Worker | None, bool]:
        """The worker died during a request: answer as fork does, start a new one."""
        status = _reap(w.pid)
        w.ckpt.release()
        kill_orphans(None)
        write_all(ctx.result_fd, describe_failure(Outcome(True, status, timed_out)))
        w.close()
        ctx.rewind_shared(clean=False)
        return None, True

    def _serve_one(
        self, ctx: ServeContext, ext: ModuleType, w: Worker
    ) -> tuple[Worker | None, bool]:
        """One request; returns (the worker to use next, or None; False at EOF)."""
        taken = self._take(ctx, ext, w)
        if not isinstance(taken, _Taken):
            return taken
        timeout = None if taken.deadline is None else taken.deadline - time.time()
        ready = poll_readable([w.status_r, w.pidfd], timeout)
        timed_out = not ready
        if w.pidfd in ready:
            return self._lost(ctx, ext, w, timed_out)
        problem, clean, request_faults = self._stop_and_reply(ctx, ext, w, timed_out, taken)
        replied_at = time.perf_counter()
        os.sched_yield()  # let the proxy take the reply before the rewind takes the CPU
        ctx.rewind_shared(clean=clean)
        files_ms = (time.perf_counter() - replied_at) * 1000
        result: dict[str, float] = {}
        if problem is None:
            try:
                with identity.acting_as_function():
                    result = w.ckpt.rewind()
                    identity.thaw(w.pid)  # detached and rewound: resume it
            except ext.Refused as exc:
                problem = str(exc)
                _discard(w.pid)
                w.ckpt.release()
        if problem is not None:
            self.reforks_in_a_row += 1
            _debug(ctx, f"inplace: starting a new worker: {problem}")
            w.close()
            kill_orphans(None)
            return None, True
        self.reforks_in_a_row = 0
        os.ftruncate(w.memfd, 0)
        os.lseek(w.memfd, 0, os.SEEK_SET)
        os.write(w.gate_w, b"g")
        if ctx.metrics_fd is not None:
            after = (time.perf_counter() - replied_at) * 1000
            _record(ctx, result, after_reply_ms=after, files_ms=files_ms, faults=request_faults)
        return w, True

    def _take(
        self, ctx: ServeContext, ext: ModuleType, w: Worker
    ) -> _Taken | tuple[Worker | None, bool]:
        """Wait for the worker to take a request: its deadline, or how serving goes on."""
        poll_readable([w.status_r, w.pidfd], None)
        reading = _read_exact(w.status_r, len(READING)) == READING
        took = reading and _read_exact(w.status_r, len(TOOK)) == TOOK
        record = _read_exact(w.status_r, STARTED_LEN) if took else b""
        started, deadline, faults_before = decode_started(record)
        if started:
            return _Taken(deadline, faults_before)
        if took:
            # It died after taking a request (while parsing it): answer it as a crash.
            return self._lost(ctx, ext, w, timed_out=False)
        status = _reap(w.pid)  # the worker ended without a request
        w.ckpt.release()
        w.close()
        kill_orphans(None)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == errors.CHILD_STDIN_EOF:
            return None, False
        if reading:
            # Part of its request may still be in stdin: the proxy starts a new launcher.
            raise StdinLost(f"the worker died reading its request (status {status})")
        _debug(ctx, f"inplace worker ended before a request (status {status})")
        return None, True

    def _stop_and_reply(
        self, ctx: ServeContext, ext: ModuleType, w: Worker, timed_out: bool, taken: _Taken
    ) -> tuple[str | None, bool, int]:
        """Stop the worker, kill what it left, answer the request.

        Returns (why the worker must be replaced, or None; whether the request ended
        cleanly; the page faults it took).
        """
        # Nothing of the function user's may run while we act as it: stop the worker and
        # kill the rest first, through the signaller; then ptrace it.
        frozen = identity.freeze(w.pid, lambda: _own_children() + identity.live_children(w.pid))
        with identity.acting_as_function():
            problem = _stop(ext, w) if frozen else "the worker could not be stopped"
        faults = _minor_faults(w.pid) - taken.faults_before if ctx.metrics_fd is not None else 0
        died = w.ckpt.exit_status()  # it ended while being stopped: answer as for a crash
        if problem is not None:
            _discard(w.pid)
            w.ckpt.release()
        kill_orphans(None if problem else w.pid)
        outcome = ext.drain(w.status_r)
        if timed_out or died is not None:
            write_all(ctx.result_fd, describe_failure(Outcome(True, died or 0, timed_out)))
        elif outcome == "exited":
            write_all(ctx.result_fd, exited_line(ACTION_EXITED))
        elif not (outcome == "done" and forward_one_line(w.memfd, ctx.result_fd)):
            write_all(ctx.result_fd, exited_line(MALFORMED))
        return problem, not timed_out and died is None and outcome == "done", faults
