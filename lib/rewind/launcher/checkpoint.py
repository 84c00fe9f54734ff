"""The checkpoint policy: when the memory and file checkpoints are taken (launcher process).

``init`` takes them right after the action's import and ``warmup`` after one run of the
action on REWIND_WARMUP, both before /init is acknowledged. ``first-request`` acknowledges
/init first, serves the first real request in this process, and takes them after it, so
that its state becomes the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from rewind.launcher import integrity, status
from rewind.launcher.backend import choose
from rewind.launcher.config import LauncherConfig
from rewind.launcher.files import FileRewinder
from rewind.memory.base import Backend, ServeContext, serve_one_in_process
from rewind.request.action import flush_logs, print_user_traceback
from rewind.request.errors import ActionLoadError, ConfigError, FailClosed
from rewind.request.protocol import RESULT_FD, send_ack


class Checkpoint:
    """Takes the checkpoint at the moment ``cfg.checkpoint`` names and picks the backend."""

    def __init__(
        self,
        cfg: LauncherConfig,
        ctx: ServeContext,
        files: FileRewinder | None,
        pipe: status.StatusPipe,
        log: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.files = files
        self.pipe = pipe
        self.log = log
        self.backend: Backend | None = None
        self.note: str | None = None

    def before_ack(self, marks: integrity.Marks) -> None:
        """Warm up, check the runtime's own code and, unless the policy is first-request,
        take the checkpoint. Raises LauncherError: /init fails."""
        if self.cfg.checkpoint == "warmup":
            try:
                self.ctx.main(self.cfg.warmup)
            except Exception as exc:
                print_user_traceback(exc)
                raise ActionLoadError(f"the warm-up run (REWIND_WARMUP) failed: {exc}") from None
        # What the action printed at import (or in the warm-up) belongs to /init's log:
        # flushed now, it is not in the buffer every request process inherits.
        flush_logs()
        integrity.verify(marks)
        if self.cfg.checkpoint != "first-request":
            self._take()

    def acknowledge(self) -> None:
        """Tell the proxy /init is done, and which backend serves (if chosen yet)."""
        record = self._record()
        if self.cfg.wait_for_ack:
            send_ack(RESULT_FD, record)
        else:
            self.pipe.send(rewind=record)

    def backend_after_ack(self) -> Backend | None:
        """The backend that serves the rest; None when stdin ended before a first request.

        Raises FailClosed when the checkpoint after the first request cannot be taken.
        """
        if self.backend is not None:
            return self.backend
        # first-request: the first real request runs here and its state is the snapshot.
        if not serve_one_in_process(self.ctx, catch_exit=False):
            return None
        try:
            backend = self._take()
        except ConfigError as exc:
            raise FailClosed(str(exc)) from None
        self.pipe.send(rewind=self._record())
        return backend

    def _take(self) -> Backend:
        self.backend, self.note = choose(self.cfg)
        if self.files is not None:
            self.files.start()
        return self.backend

    def _record(self) -> dict[str, str]:
        record = status.choice(self.cfg, self.backend, self.note)
        self.log(status.describe(record))
        return record
