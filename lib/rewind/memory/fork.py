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
import os
import signal
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from rewind.memory import identity, prefault, supervise, sysapi
from rewind.memory.base import ServeContext
from rewind.memory.child import READING, TOOK, decode_started, serve_one
from rewind.request import errors
from rewind.request.errors import EXIT_OK
from rewind.request.protocol import write_all


@dataclass
class Standby:
    """The descriptors and hints a new request process starts with."""

    memfd: int  # where it writes its result line
    status_w: int  # where it says it started, and its deadline
    prefault_pages: array | None = None  # pages to write before the request arrives
    learn_fd: int | None = None  # where to list the pages it wrote, when learning
    parent_only: tuple[int, ...] = ()  # the snapshot process's ends, closed in the child


Spawner = Callable[[ServeContext, Standby], int]


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
            except supervise.StdinLost as exc:
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
                if not (written and supervise.forward_one_line(memfd, ctx.result_fd)):
                    write_all(ctx.result_fd, supervise.describe_failure(outcome))
            finally:
                os.close(memfd)
            request_faults = outcome.request_faults
            replied_at = time.perf_counter()
            ctx.rewind_shared(clean=written)
            files_ms = (time.perf_counter() - replied_at) * 1000

    def _run_one(
        self, ctx: ServeContext, on_standby: Callable[[], None]
    ) -> tuple[supervise.Outcome, int]:
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
            supervise.kill_descendants()
        if outcome.started:
            self.served += 1
        if learn_fd is not None:
            if outcome.started and not outcome.timed_out:
                learned = prefault.load(learn_fd)
                if learned:
                    self.hints = learned
            os.close(learn_fd)
        return outcome, memfd

    def _supervise(self, pid: int, pidfd: int, status_r: int) -> supervise.Outcome:
        marker, msg = supervise.read_status(status_r, pidfd)
        started, deadline, faults_before = decode_started(msg)
        started = started or marker == TOOK  # died parsing its request: still its request
        timed_out = False
        if started:
            timeout = None if deadline is None else deadline - time.time()
            if not supervise.poll_readable([pidfd], timeout):
                timed_out = True
                identity.send_signal([pid], signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        faults = max(0, usage.ru_minflt - faults_before) if started else 0
        outcome = supervise.Outcome(started, status, timed_out, faults)
        if marker == READING and not outcome.eof:
            raise supervise.StdinLost(
                f"a request process died reading its request (status {status})"
            )
        return outcome


def fork_backend(prefault_pages: bool = False) -> SnapshotProcess:
    """The fork backend: each request in a child forked from the snapshot."""
    return SnapshotProcess("fork", fork_spawner, prefault=prefault_pages)


def fresh_backend() -> SnapshotProcess:
    """A fresh interpreter per request: secure with threads, but cold-start slow."""
    return SnapshotProcess("fresh", fresh_spawner)
