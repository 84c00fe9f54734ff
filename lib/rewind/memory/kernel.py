"""The REWIND kernel backend: in-process checkpoint and rewind (launcher process).

The proxy's helper has already called ``rewindable`` (550) on this process. Here the
launcher calls ``checkpoint`` (548) once and ``rewind`` (549) before every later
request, from the same place in the loop. Untested on a real REWIND kernel: this
machine's kernel lacks the calls, so tests drive the loop with a fake ``KernelCalls``.
"""

from __future__ import annotations

import enum
from typing import Protocol

from rewind.memory import identity
from rewind.memory.base import ServeContext, serve_one_in_process
from rewind.memory.supervise import kill_descendants
from rewind.memory.sysapi import become_subreaper, raw_syscall
from rewind.request.errors import EXIT_OK, FailClosed

SYS_CHECKPOINT = 548
SYS_REWIND = 549
SYS_REWINDABLE = 550


class KernelCalls(Protocol):
    """The three REWIND system calls."""

    def rewindable(self) -> None: ...

    def checkpoint(self) -> None: ...

    def rewind(self) -> None: ...


class RewindSyscalls:
    """The real system calls; each raises OSError (ENOSYS on a stock kernel)."""

    def rewindable(self) -> None:
        """Mark the caller's parent as rewindable."""
        raw_syscall(SYS_REWINDABLE)

    def checkpoint(self) -> None:
        """Snapshot the calling process's memory."""
        raw_syscall(SYS_CHECKPOINT)

    def rewind(self) -> None:
        """Return the calling process's memory to its checkpoint."""
        raw_syscall(SYS_REWIND)


class Phase(enum.Enum):
    """Where the loop is; stored before the checkpoint so a rewind keeps it."""

    FRESH = "fresh"
    CHECKPOINTED = "checkpointed"


class KernelBackend:
    """Serve requests in this process, rewinding memory through the REWIND kernel."""

    name = "kernel"

    def __init__(self, calls: KernelCalls | None = None) -> None:
        self.calls: KernelCalls = calls or RewindSyscalls()

    def serve(self, ctx: ServeContext) -> int:
        """Answer requests until EOF; a failed rewind fails closed."""
        identity.become_function()  # requests run in this process: no capability left
        become_subreaper()
        phase = Phase.FRESH
        while True:
            try:
                if phase is Phase.FRESH:
                    # Written before the snapshot, so memory rewound to it keeps saying so.
                    phase = Phase.CHECKPOINTED
                    self.calls.checkpoint()
                else:
                    self.calls.rewind()
            except OSError as exc:
                raise FailClosed(f"REWIND kernel call failed: {exc}") from None
            # Processes the request started would share stdin with the next request.
            if not serve_one_in_process(ctx, catch_exit=True, before_reply=kill_descendants):
                return EXIT_OK
            ctx.rewind_files()
