"""ActionLoop framing between the proxy and the launcher (all launcher processes).

One JSON line in on stdin, one JSON line out on fd 3, and an ``{"ok": true}`` ack after
the action is loaded. Reads use ``os.read`` on the raw descriptor: a buffered reader
would pull bytes of a later request into memory that is then forked or rewound.
"""

from __future__ import annotations

import json
import os
from typing import Any

RESULT_FD = 3
ACK_LINE = b'{"ok": true}\n'
_CHUNK = 1 << 16


class LineReader:
    """Reads newline-terminated requests from a descriptor with exact framing.

    The proxy writes one request and waits for its answer, so a read never returns
    bytes past the newline; if it does (a proxy that pipelines), the extra bytes are
    kept for the next call in this process.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = bytearray()

    def read_line(self) -> bytes | None:
        """Return one line without its newline, or None at EOF."""
        buf = self._pending
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                line = bytes(memoryview(buf)[:nl])  # one copy, not a slice and a copy
                del buf[: nl + 1]
                return line
            start = len(buf)
            chunk = os.read(self.fd, _CHUNK)
            if not chunk:
                if buf:
                    line = bytes(buf)
                    buf.clear()
                    return line
                return None
            buf += chunk

    @property
    def has_pending(self) -> bool:
        """True when bytes of a further request were already read."""
        return bool(self._pending)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``; pipes may accept partial writes."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_ack(fd: int = RESULT_FD, rewind: dict[str, Any] | None = None) -> None:
    """Tell the proxy the action is loaded (only when it asked for an ack).

    ``rewind`` (the backend choice, for our proxy's status endpoint) rides along as an
    extra field: upstream's proxy decodes only ``ok`` and ignores the rest.
    """
    if rewind is None:
        write_all(fd, ACK_LINE)
    else:
        write_all(fd, json.dumps({"ok": True, "rewind": rewind}).encode() + b"\n")
