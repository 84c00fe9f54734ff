"""The signaller: sends SIGKILL, SIGSTOP and SIGCONT to the function user's processes.

With two identities the snapshot process runs as the snapshot user, whose processes
B's cannot signal, and so B's processes cannot be signalled by it either (kill(2)
compares the sender's real or effective uid with the target's real or saved uid). Yet it
must kill a request that overruns, whatever processes a request leaves, and stop the
inplace worker. The signaller does it: forked by the launcher before the action is
imported, it keeps CAP_KILL alone (the launcher drops it) and signals, on request, only
processes whose real, effective and saved uids are all the function user's. It holds no
descriptor of the launcher's but its two pipes, ignores every signal it can, and dies
with the launcher.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable

from rewind.memory import sysapi
from rewind.request.errors import FailClosed

ALLOWED = (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT)
BATCH = 256  # pids per command: one command stays below PIPE_BUF, so it is one write


class Signaller:
    """The launcher's handle on its signaller process."""

    def __init__(self, function_uid: int, quiet: Callable[[], None]) -> None:
        """Fork the signaller; ``quiet`` makes a process ignore the signals it can."""
        cmd_r, self.cmd_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        self.parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                _main(function_uid, self.parent, cmd_r, rep_w, quiet)
                code = 0
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(rep_w)

    def send(self, pids: list[int], sig: int) -> None:
        """Have ``sig`` sent to ``pids`` (those of the function user); wait until it is."""
        for i in range(0, len(pids), BATCH):
            batch = " ".join(str(p) for p in pids[i : i + BATCH])
            os.write(self.cmd_w, f"{sig} {batch}".encode())
            if not os.read(self.rep_r, 16):
                raise FailClosed("the signaller is gone: request processes cannot be stopped")

    def close(self) -> None:
        """Let go of it (a request process); the launcher itself also reaps it."""
        os.close(self.cmd_w)
        os.close(self.rep_r)
        if self.parent == os.getpid():  # it exits at EOF
            os.waitpid(self.pid, 0)


def _main(uid: int, parent: int, cmd_r: int, rep_w: int, quiet: Callable[[], None]) -> None:
    """The signaller process: serve commands until EOF."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)  # no request stream, and nothing of ours on stdout
    keep = sorted((2, cmd_r, rep_w))
    os.closerange(3, keep[1])
    os.closerange(keep[1] + 1, keep[2])
    os.closerange(keep[2] + 1, 1 << 16)
    kill_only = 1 << sysapi.CAP_KILL
    sysapi.clear_ambient_capabilities()
    sysapi.set_capabilities(kill_only, kill_only, 0)
    sysapi.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        return
    quiet()
    while True:
        msg = os.read(cmd_r, 4096)
        if not msg:
            return
        sent = 0
        try:
            sig, *pids = (int(f) for f in msg.split())
        except ValueError:
            sig, pids = 0, []
        if sig in ALLOWED:
            sent = sum(_signal_if_function(uid, pid, sig) for pid in pids)
        os.write(rep_w, str(sent).encode())


def _signal_if_function(uid: int, pid: int, sig: int) -> int:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0
    try:
        # Checked once the pidfd pins the process: a recycled pid makes the send fail.
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    if {int(x) for x in line.split()[1:4]} != {uid}:
                        return 0
                    break
        signal.pidfd_send_signal(pidfd, sig)
        return 1
    except OSError:
        return 0
    finally:
        os.close(pidfd)


def send_direct(pids: Iterable[int], sig: int) -> list[int]:
    """Signal what this process may; return the pids it may not (gone ones are skipped)."""
    refused = []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            refused.append(pid)
    return refused
