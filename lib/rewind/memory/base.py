"""What every memory backend gets from the launcher, and the in-process serve loop.

The launcher builds a ``ServeContext`` after the action is loaded; a backend's
``serve`` answers requests until stdin reaches EOF and returns the launcher's exit
code. File rewind plugs in through ``ServeContext.files`` after every reply.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rewind.memory import identity
from rewind.memory.descriptors import SharedDescriptors
from rewind.request.action import ActionMain, error_line, flush_logs, run_request
from rewind.request.errors import EXIT_OK
from rewind.request.protocol import RESULT_FD, LineReader, write_all


class FileHook(Protocol):
    """File rewind as the memory backends see it (launcher.files.FileRewinder)."""

    def checkpoint(self) -> None: ...

    def rewind(self) -> None: ...

    def fileno(self) -> int | None: ...


@dataclass
class ServeContext:
    """Everything a backend needs to serve requests (built in the launcher process)."""

    main: ActionMain
    main_name: str
    reader: LineReader
    files: FileHook | None = None
    result_fd: int = RESULT_FD
    debug: bool = False
    spawn_env: dict[str, str] = field(default_factory=dict)
    metrics_fd: int | None = None
    status_fd: int | None = None  # our proxy's status pipe: request processes close it
    log: Callable[[str], None] = lambda msg: print(f"rewind: {msg}", file=sys.stderr)
    descriptors: SharedDescriptors | None = None

    def record(self, **timings: float) -> None:
        """Append one line of rewind timings when REWIND_METRICS_FILE is set."""
        if self.metrics_fd is not None:
            line = json.dumps({k: round(v, 4) for k, v in timings.items()}) + "\n"
            write_all(self.metrics_fd, line.encode())

    def rewind_files(self) -> None:
        """Restore the protected files; raises FailClosed when that is impossible."""
        if self.files is not None:
            self.files.rewind()

    def checkpoint_descriptors(self) -> None:
        """Record the descriptors request processes will share with this process."""
        if self.descriptors is not None:
            return  # taken already (inplace falling back to fork keeps the first)
        files_fd = self.files.fileno() if self.files else None
        own = (self.result_fd, self.metrics_fd, files_fd, self.status_fd, *identity.private_fds())
        self.descriptors = SharedDescriptors.take(
            [fd for fd in own if fd is not None],
            self.log if self.debug else None,
            files_rewound=self.files is not None,
        )

    def rewind_shared(self, clean: bool) -> None:
        """After a request: files, then the descriptors shared with its processes.

        ``clean`` is False when the request timed out or its process crashed. Files
        come first: restoring a file can orphan an inode a descriptor still reaches.
        Raises FailClosed when either cannot be put back.
        """
        self.rewind_files()
        if self.descriptors is not None:
            for note in self.descriptors.rewind(clean):
                if self.debug:
                    self.log(note)


class Backend(Protocol):
    """A memory backend: ``serve`` answers requests until EOF and returns the exit code.

    Implemented by ``NoneBackend``, ``fork.SnapshotProcess`` (fork and fresh),
    ``kernel.KernelBackend`` and ``inplace.InplaceBackend``; ``launcher.backend`` picks one.
    """

    name: str

    def serve(self, ctx: ServeContext) -> int: ...


# Runtime status lines start with a space, which no result line of an action does: the
# result's bytes reach fd 3 only after a check that they do not (forward_one_line), so an
# action cannot pass its result off as a status, nor have its result taken for one.
STATUS_PREFIX = b" "


def exited_line(detail: str) -> bytes:
    """The status line telling the proxy the request's process exited (400 upstream)."""
    return STATUS_PREFIX + error_line(detail, rewind_status="exited")


def serve_one_in_process(
    ctx: ServeContext, *, catch_exit: bool, before_reply: Callable[[], object] | None = None
) -> bool:
    """Serve one request in this process; False at EOF.

    With ``catch_exit`` an action's SystemExit answers the request as "exited" and
    the process goes on; without it the exit propagates, as upstream's launcher does.
    ``before_reply`` runs before the result is written: the proxy sends the next request
    as soon as it has the reply, so whatever the request started must be gone by then.
    """
    line = ctx.reader.read_line()
    if line is None:
        return False
    try:
        out = run_request(ctx.main, line)
    except (SystemExit, KeyboardInterrupt):
        flush_logs()
        if not catch_exit:
            raise
        out = exited_line("The action exited before returning a result.")
    del line
    if before_reply is not None:
        before_reply()
    write_all(ctx.result_fd, out)
    return True


class NoneBackend:
    """Plain warm reuse: every request sees what earlier ones left. INSECURE baseline."""

    name = "none"

    def serve(self, ctx: ServeContext) -> int:
        """Answer requests in this process until EOF (runs in the launcher)."""
        identity.become_function()  # requests run here: no capability, no second identity
        while serve_one_in_process(ctx, catch_exit=False):
            ctx.rewind_files()
        return EXIT_OK
