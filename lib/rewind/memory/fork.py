"""The fork and fresh backends: the snapshot process and its request processes.

After the checkpoint the launcher becomes the snapshot process. It never runs a
request and never reads request or response bytes: a standby request process is
started before each request, reads it from stdin itself, and leaves its result in a
memfd that the snapshot process moves to fd 3 with sendfile once the request process
and every descendant it started are dead. ``fork`` forks the standby from the
snapshot; ``fresh`` starts a new interpreter instead (used when the process has
threads that fork would silently lose, and as the cold baseline).
"""

from __future__ import annotations

import gc
import mmap
import os
import select
import signal
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from rewind.launcher import errors
from rewind.launcher.action import error_line
from rewind.launcher.errors import EXIT_OK, FailClosed
from rewind.launcher.protocol import write_all
from rewind.memory import identity, prefault, sysapi
from rewind.memory.base import ServeContext, exited_line
from rewind.memory.child import READING, TOOK, decode_started, serve_one

# How long descendants of a finished request may take to die before we fail closed.
KILL_TIMEOUT_S = 5.0


@dataclass
class Standby:
    """The descriptors and hints a new request process starts with."""

    memfd: int  # where it writes its result line
    status_w: int  # where it says it started, and its deadline
    prefault_pages: array | None = None  # pages to write before the request arrives
    learn_fd: int | None = None  # where to list the pages it wrote, when learning
    parent_only: tuple[int, ...] = ()  # the snapshot process's ends, closed in the child


Spawner = Callable[[ServeContext, Standby], int]


@dataclass
class Outcome:
    """How one request process ended, as seen by the snapshot process."""

    started: bool
    status: int  # waitpid status
    timed_out: bool = False
    request_faults: int = 0  # page faults the request process took after its request came

    @property
    def eof(self) -> bool:
        """The proxy closed stdin: the request process found no request."""
        return (
            not self.started
            and os.WIFEXITED(self.status)
            and os.WEXITSTATUS(self.status) == errors.CHILD_STDIN_EOF
        )


def poll_readable(fds: list[int], timeout: float | None) -> list[int]:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    # poll() takes a C int of milliseconds; a later deadline is as good as none.
    ms = None if timeout is None or timeout > 86400 * 24 else max(0, int(timeout * 1000))
    while True:
        try:
            return [fd for fd, _ in poller.poll(ms)]
        except InterruptedError:
            continue


def kill_descendants(
    timeout: float = KILL_TIMEOUT_S,
    keep: int | None = None,
    children: Callable[[], list[int]] = sysapi.child_pids,
) -> int:
    """SIGKILL and reap every child of this (subreaper) process but ``keep``; return how many.

    Called once the request process is gone (or, for inplace, stopped): its descendants
    have re-parented to us by then, so "no child left" means "no descendant left".
    Grandchildren re-parent as their parents die, so loop until none is left. Reaping is
    by pid: ``waitpid(-1)`` would also consume a ptrace stop of the kept process.
    """
    killed = 0
    limit = time.monotonic() + timeout
    while True:
        pids = [p for p in children() if p not in (keep, identity.signaller_pid())]
        if not pids:
            return killed
        if time.monotonic() > limit:
            raise FailClosed(f"processes {pids} left by a request could not be killed")
        identity.send_signal(pids, signal.SIGKILL)
        killed += len(pids)
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.0005)


TIMED_OUT = "The action exceeded its deadline and was stopped."
ACTION_EXITED = "The action exited before returning a result."
MALFORMED = "The action's process left a malformed result."


def forward_one_line(memfd: int, result_fd: int) -> bool:
    """Move the memfd's bytes to fd 3 inside the kernel if they are exactly one line.

    The bytes are mapped read-only and searched in place, then sent with sendfile:
    nothing is copied into the snapshot process's heap. A function that wrote extra
    lines toward the channel would otherwise have them read as the answers to later
    requests. Returns False, having sent nothing, when the memfd is not one line or
    starts with white space (the mark of the runtime's own status lines).
    """
    size = os.fstat(memfd).st_size
    if size == 0:
        return False
    with mmap.mmap(memfd, size, prot=mmap.PROT_READ) as view:
        if view.find(b"\n") != size - 1 or view[:1].isspace():
            return False  # not one line, or dressed up as a runtime status line
    offset = 0
    while offset < size:
        sent = os.sendfile(result_fd, memfd, offset, size - offset)
        if sent == 0:
            raise OSError("sendfile made no progress")
        offset += sent
    return True


def describe_failure(outcome: Outcome) -> bytes:
    """The error line for a request process that left no valid result."""
    if outcome.timed_out:
        return error_line(TIMED_OUT)
    status = outcome.status
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        return exited_line(f"The action's process was killed by {name}{hint}.")
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == errors.CHILD_ACTION_EXITED:
        return exited_line(ACTION_EXITED)
    if code == errors.CHILD_RESULT_WRITTEN:
        return exited_line(MALFORMED)
    return exited_line(f"The action's process exited with code {code}.")


class StdinLost(Exception):
    """A request process died part-way through reading its request from stdin."""


def read_status(status_r: int, pidfd: int) -> tuple[bytes, bytes]:
    """(the last marker seen, the "started" record or b"") from a request process.

    The process writes READING when a request is there, TOOK once it has read the whole
    line, then the record once it has parsed the deadline. If it dies after TOOK (a body
    that exhausts memory or the parser), the request is still answered, never dropped.
    """
    marker, msg = b"", b""
    while True:
        ready = poll_readable([status_r, pidfd], None)
        if status_r not in ready:
            return marker, msg  # gone without (another) word
        chunk = os.read(status_r, 64)
        if not chunk:
            return marker, msg
        msg += chunk
        for mark in (READING, TOOK):
            if msg.startswith(mark):
                marker, msg = mark, msg[len(mark) :]
        if msg:
            return marker, msg


def fork_spawner(ctx: ServeContext, sb: Standby) -> int:
    """Fork a standby request process from this snapshot (fork backend)."""
    close = [ctx.result_fd, *sb.parent_only]
    hook_fd = ctx.files.fileno() if ctx.files is not None else None
    for fd in (hook_fd, ctx.metrics_fd, ctx.status_fd):
        if fd is not None:
            close.append(fd)
    pid = os.fork()
    if pid == 0:
        serve_one(
            ctx.reader, ctx.main, sb.memfd, sb.status_w, close, sb.prefault_pages, sb.learn_fd
        )
    return pid


def fresh_spawner(ctx: ServeContext, sb: Standby) -> int:
    """Start a new interpreter that loads the action and serves one request."""
    memfd, status_w = sb.memfd, sb.status_w
    os.set_inheritable(memfd, True)
    os.set_inheritable(status_w, True)
    argv = [
        sys.executable,
        "-m",
        "rewind.launcher",
        "--main",
        ctx.main_name,
        "--one-shot",
        str(memfd),
        str(status_w),
    ]
    # The sidecar connection too: a request holding it could checkpoint or skip rewinds.
    hook_fd = ctx.files.fileno() if ctx.files is not None else None
    closing = [ctx.result_fd] + [fd for fd in (hook_fd, ctx.metrics_fd) if fd is not None]
    if identity.active() is None:
        actions = [(os.POSIX_SPAWN_CLOSE, fd) for fd in closing]
        return os.posix_spawn(sys.executable, argv, ctx.spawn_env, file_actions=actions)
    # posix_spawn cannot change ids: fork, become the function user, exec.
    pid = os.fork()
    if pid == 0:
        try:
            identity.become_function()
            for fd in closing:
                os.close(fd)
            os.execve(sys.executable, argv, ctx.spawn_env)
        finally:
            os._exit(errors.CHILD_INTERNAL_ERROR)
    return pid


class SnapshotProcess:
    """The fork/fresh serve loop (runs in the launcher after the checkpoint)."""

    def __init__(self, name: str, spawner: Spawner, prefault: bool = False) -> None:
        self.name = name
        self.spawner = spawner
        self.prefault = prefault
        self.hints: array | None = None  # pages recent requests wrote (addresses only)
        self.served = 0

    def serve(self, ctx: ServeContext) -> int:
        """Answer requests through request processes until the proxy closes stdin."""
        identity.become_snapshot()
        sysapi.set_dumpable(False)
        sysapi.become_subreaper()
        gc.collect()
        gc.freeze()  # keep collector writes off the pages children share
        replied_at: float | None = None
        files_ms = 0.0
        request_faults = 0

        def standby_ready() -> None:
            # Rewind work between the last reply and the next standby being ready.
            if replied_at is not None and ctx.metrics_fd is not None:
                after = (time.perf_counter() - replied_at) * 1000
                ctx.record(after_reply_ms=after, files_ms=files_ms, request_faults=request_faults)

        while True:
            try:
                outcome, memfd = self._run_one(ctx, standby_ready)
            except StdinLost as exc:
                if ctx.debug:
                    ctx.log(f"{exc}; the proxy starts a new launcher")
                return errors.EXIT_STDIN_LOST
            try:
                if outcome.eof:
                    return EXIT_OK
                if not outcome.started:
                    if ctx.debug:
                        ctx.log(f"standby request process ended early (status {outcome.status})")
                    continue
                written = (
                    not outcome.timed_out
                    and os.WIFEXITED(outcome.status)
                    and os.WEXITSTATUS(outcome.status) == errors.CHILD_RESULT_WRITTEN
                )
                if not (written and forward_one_line(memfd, ctx.result_fd)):
                    write_all(ctx.result_fd, describe_failure(outcome))
            finally:
                os.close(memfd)
            request_faults = outcome.request_faults
            replied_at = time.perf_counter()
            ctx.rewind_shared(clean=written)
            files_ms = (time.perf_counter() - replied_at) * 1000

    def _run_one(self, ctx: ServeContext, on_standby: Callable[[], None]) -> tuple[Outcome, int]:
        memfd = os.memfd_create("rewind-result")
        status_r, status_w = os.pipe()
        learn_fd = None
        if self.prefault and self.served % prefault.LEARN_EVERY == 0:
            learn_fd = os.memfd_create("rewind-pages")
        sb = Standby(memfd, status_w, self.hints if self.prefault else None, learn_fd, (status_r,))
        try:
            pid = self.spawner(ctx, sb)
        finally:
            os.close(status_w)
        on_standby()
        pidfd = os.pidfd_open(pid)
        try:
            outcome = self._supervise(pid, pidfd, status_r)
        finally:
            os.close(pidfd)
            os.close(status_r)
            kill_descendants()
        if outcome.started:
            self.served += 1
        if learn_fd is not None:
            if outcome.started and not outcome.timed_out:
                learned = prefault.load(learn_fd)
                if learned:
                    self.hints = learned
            os.close(learn_fd)
        return outcome, memfd

    def _supervise(self, pid: int, pidfd: int, status_r: int) -> Outcome:
        marker, msg = read_status(status_r, pidfd)
        started, deadline, faults_before = decode_started(msg)
        started = started or marker == TOOK  # died parsing its request: still its request
        timed_out = False
        if started:
            timeout = None if deadline is None else deadline - time.time()
            if not poll_readable([pidfd], timeout):
                timed_out = True
                identity.send_signal([pid], signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        faults = max(0, usage.ru_minflt - faults_before) if started else 0
        outcome = Outcome(started, status, timed_out, faults)
        if marker == READING and not outcome.eof:
            raise StdinLost(f"a request process died reading its request (status {status})")
        return outcome


def fork_backend(prefault_pages: bool = False) -> SnapshotProcess:
    """The fork backend: each request in a child forked from the snapshot."""
    return SnapshotProcess("fork", fork_spawner, prefault=prefault_pages)


def fresh_backend() -> SnapshotProcess:
    """A fresh interpreter per request: secure with threads, but cold-start slow."""
    return SnapshotProcess("fresh", fresh_spawner)
