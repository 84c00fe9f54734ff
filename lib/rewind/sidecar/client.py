"""Client of the file sidecar, used by the launcher after every request (launcher process).

One connection is kept open; a broken connection is re-established once before the call
fails. All failures raise SidecarError, so the launcher can fail closed on a single type.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from rewind.sidecar.protocol import LineReader, parse_address, request, send_all


class SidecarError(Exception):
    """Base error of the sidecar component: which operation failed, and why."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op
        self.message = message


class SidecarClient:
    """Talks to the sidecar at ``unix:/path``, ``tcp:HOST:PORT`` or ``fd:N``; not thread-safe.

    ``fd:N`` is a connection the proxy made and handed over as descriptor N: the
    sidecar's socket stays root-only, and such a connection is never re-established.
    """

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: LineReader | None = None
        self._next_id = 0
        self.sockaddr: str | tuple[str, int] = ""
        self._inherited = address.startswith("fd:")
        if self._inherited:
            fd = address[3:]
            if not fd.isdigit():
                raise SidecarError("connect", f"bad sidecar address {address!r}")
            try:
                sock = socket.socket(fileno=int(fd))
            except OSError as exc:
                raise SidecarError("connect", f"no connection on {address}: {exc}") from None
            sock.settimeout(timeout)
            self._sock, self._reader = sock, LineReader(sock)
            self.family, self.sockaddr = sock.family, ""
            return
        try:
            self.family, self.sockaddr = parse_address(address)
        except ValueError as exc:
            raise SidecarError("connect", str(exc)) from None

    def checkpoint(self) -> dict[str, Any]:
        """Snapshot the protected trees; returns the sidecar's metrics."""
        return self._call("checkpoint")

    def rewind(self) -> dict[str, Any]:
        """Restore the protected trees to the checkpoint; returns once they are restored."""
        return self._call("rewind")

    def status(self) -> dict[str, Any]:
        """Counts, ``checkpointed`` and the last metrics."""
        return self._call("status")

    def fileno(self) -> int | None:
        """The connection's descriptor (None when not connected), for children to close."""
        return self._sock.fileno() if self._sock is not None else None

    def close(self) -> None:
        """Drop the connection; the next call reconnects."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._reader = None

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, op: str) -> tuple[socket.socket, LineReader]:
        if self._sock is not None and self._reader is not None:
            return self._sock, self._reader
        if self._inherited:
            raise SidecarError(op, f"the connection {self.address} from the proxy is closed")
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.sockaddr)
        except OSError as exc:
            sock.close()
            raise SidecarError(op, f"cannot connect to {self.address}: {exc}") from None
        if self.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._reader = sock, LineReader(sock)
        return sock, self._reader

    def _call(self, op: str) -> dict[str, Any]:
        self._next_id += 1
        req_id = self._next_id
        data = request(op, req_id)
        for attempt in (1, 2):
            sock, reader = self._connect(op)
            try:
                send_all(sock, data)
                line = reader.read_line()
            except TimeoutError:
                self.close()  # a late reply would desynchronise the stream
                raise SidecarError(
                    op, f"no reply from {self.address} within {self.timeout}s"
                ) from None
            except OSError as exc:
                self.close()
                if attempt == 2:
                    raise SidecarError(op, f"connection to {self.address} failed: {exc}") from None
                continue
            if line is None:  # the sidecar closed an idle connection: reconnect once
                self.close()
                if attempt == 2:
                    raise SidecarError(op, f"{self.address} closed the connection")
                continue
            return self._check(op, req_id, line)
        raise AssertionError("unreachable")

    def _check(self, op: str, req_id: int, line: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(line)
        except ValueError:
            self.close()
            raise SidecarError(op, f"unreadable reply: {line[:200]!r}") from None
        if not isinstance(reply, dict) or reply.get("id") != req_id:
            self.close()
            raise SidecarError(op, f"reply does not answer request {req_id}: {line[:200]!r}")
        if not reply.get("ok"):
            raise SidecarError(op, str(reply.get("error", "sidecar reported failure")))
        metrics = reply.get("metrics")
        return metrics if isinstance(metrics, dict) else {}
