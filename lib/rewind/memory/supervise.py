"""Supervising request processes, for every backend that has them (snapshot process).

How a request process ended (``Outcome``), the error line for one that left no valid
result, moving a result to fd 3 only when it is exactly one line, reading the status
pipe, and killing whatever a request left behind (this process is a subreaper).
"""

from __future__ import annotations

import mmap
import os
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass

from rewind.memory import identity, sysapi
from rewind.memory.base import exited_line
from rewind.memory.child import READING, TOOK
from rewind.request import errors
from rewind.request.action import error_line

# How long descendants of a finished request may take to die before we fail closed.
KILL_TIMEOUT_S = identity.KILL_TIMEOUT_S


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
    return identity.kill_leftovers(children, keep=keep, timeout=timeout)


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
