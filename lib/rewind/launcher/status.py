"""What the launcher tells our proxy about itself, for ``GET /rewind/status`` (launcher).

Two channels, neither of which can be mistaken for a reply:

- the ack line carries the memory backend chosen at the checkpoint, as
  ``{"ok": true, "rewind": {...}}``; an upstream proxy reads only ``ok``;
- a status pipe, which only our proxy opens and names in ``REWIND_STATUS_FD``, carries
  what happens after the ack: the choice made after the first request
  (``REWIND_CHECKPOINT=first-request``), and the reason the launcher failed closed.

Request processes never hold the pipe (the backends close ``ServeContext.status_fd`` in
them), so a function cannot forge what the status endpoint reports.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from rewind.launcher.config import LauncherConfig
from rewind.memory.base import Backend

PENDING_FIRST_REQUEST = (
    "REWIND_CHECKPOINT=first-request: the backend is chosen after the first request"
)


def choice(cfg: LauncherConfig, backend: Backend | None, note: str | None) -> dict[str, str]:
    """The record of the backend choice (``backend`` None: not chosen yet)."""
    if backend is None:
        memory, reason = "", PENDING_FIRST_REQUEST
    else:
        memory = backend.name
        reason = note or (
            f"REWIND_MEMORY=auto: {memory} works here"
            if cfg.memory == "auto"
            else f"REWIND_MEMORY={cfg.memory}"
        )
    return {"memory": memory, "reason": reason, "checkpoint": cfg.checkpoint, "files": cfg.files}


def describe(record: dict[str, str]) -> str:
    """One debug-log line for a choice record."""
    memory = record["memory"] or "(not chosen yet)"
    return (
        f"memory backend {memory} ({record['reason']}); checkpoint {record['checkpoint']}, "
        f"files {record['files']}"
    )


class StatusPipe:
    """The write end of our proxy's status pipe, or nothing behind another proxy."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @classmethod
    def open(cls, fd: int | None) -> StatusPipe:
        """Use ``fd`` only if it really is a pipe; keep it out of exec'd processes."""
        if fd is None:
            return cls(None)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return cls(None)
            os.set_inheritable(fd, False)
        except OSError:
            return cls(None)
        return cls(fd)

    def send(self, **record: Any) -> None:
        """Write one JSON line; a proxy that went away is not an error of ours."""
        if self.fd is None:
            return
        data = json.dumps(record, ensure_ascii=False).encode() + b"\n"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            pass
