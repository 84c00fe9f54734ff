"""File rewind as the launcher sees it: a client of the sidecar (launcher process).

Any failure to checkpoint or rewind raises FailClosed: the launcher then stops and
the proxy refuses further requests, so a dirty file system is never served.
"""

from __future__ import annotations

from rewind.request.errors import FailClosed
from rewind.sidecar.client import SidecarClient, SidecarError


class FileRewinder:
    """Asks the sidecar to checkpoint and rewind the protected files."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client = SidecarClient(address)

    def start(self) -> None:
        """Take the checkpoint, or rewind to the one a previous launcher took.

        A restarted launcher (after a crash) must not make a possibly dirty tree the
        new baseline, so an existing checkpoint is restored instead.
        """
        state = self._call("status")
        if state.get("checkpointed"):
            self._call("rewind")
        else:
            self._call("checkpoint")

    def checkpoint(self) -> None:
        """Snapshot the protected files (once, at the checkpoint)."""
        self._call("checkpoint")

    def rewind(self) -> None:
        """Restore the protected files; returns only once the sidecar has answered."""
        self._call("rewind")

    def fileno(self) -> int | None:
        """The socket's descriptor, which request processes must close."""
        return self.client.fileno()

    def _call(self, op: str) -> dict[str, object]:
        try:
            reply: dict[str, object] = getattr(self.client, op)()
        except SidecarError as exc:
            msg = f"file {op} through the sidecar at {self.address} failed: {exc}"
            raise FailClosed(msg) from None
        except OSError as exc:
            msg = f"file {op}: cannot reach the sidecar at {self.address}: {exc}"
            raise FailClosed(msg) from None
        return reply
