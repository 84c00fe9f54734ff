"""Wire protocol between the launcher and the file sidecar (both processes import it).

Newline-delimited JSON over a stream socket. A request is ``{"op": ..., "id": <int>}``; the
reply echoes ``id`` and ``op`` with ``"ok": true`` and ``metrics``, or ``"ok": false`` and an
``error`` saying which operation failed and why. Every request gets exactly one reply.
Reads loop until a whole line is in; writes loop until every byte is out.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any

#: Longest accepted line, newline excluded. Longer requests get an error reply.
MAX_LINE = 64 * 1024
OPS = ("checkpoint", "rewind", "status")
_RECV = 65536


class ProtocolError(Exception):
    """A line that is not a valid request; ``req_id``/``op`` are echoed when they were readable."""

    def __init__(self, message: str, req_id: int | None = None, op: str | None = None) -> None:
        super().__init__(message)
        self.req_id = req_id
        self.op = op


class LineTooLong(ProtocolError):
    """More than MAX_LINE bytes arrived without a newline."""


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request."""

    op: str
    id: int


def parse_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """``unix:/path`` → (AF_UNIX, path); ``tcp:HOST:PORT`` → (AF_INET[6], (host, port)).

    HOST must be a loopback IP address, as in the proxy (``parseAddress`` in config.go): the
    sidecar runs as root and must not be reachable from outside its host or container.
    """
    kind, sep, rest = address.partition(":")
    if kind == "unix" and sep and rest.startswith("/"):
        return socket.AF_UNIX, rest
    if kind == "tcp" and sep:
        host, sep2, port = rest.rpartition(":")
        host = host.strip("[]")
        if sep2 and _loopback(host) and port.isdigit() and 0 < int(port) < 65536:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            return family, (host, int(port))
    raise ValueError(
        f"bad sidecar address {address!r}: expected unix:/abs/path or tcp:LOOPBACK-IP:PORT"
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or not an address at all


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line (compact JSON cannot contain a raw newline)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def request(op: str, req_id: int) -> bytes:
    """The bytes of a request."""
    return encode({"op": op, "id": req_id})


def ok_reply(req_id: int, op: str, metrics: dict[str, Any]) -> bytes:
    """The bytes of a success reply."""
    return encode({"id": req_id, "ok": True, "op": op, "metrics": metrics})


def error_reply(req_id: int | None, op: str | None, error: str) -> bytes:
    """The bytes of a failure reply; ``error`` names the failed operation and the reason."""
    return encode({"id": req_id, "ok": False, "op": op, "error": error})


def parse_request(line: bytes) -> Request:
    """Validate one request line; raises ProtocolError carrying whatever id/op was readable."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"request: malformed JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("request: expected a JSON object")
    req_id = msg.get("id")
    op = msg.get("op")
    good_id = isinstance(req_id, int) and not isinstance(req_id, bool)
    echo_id = req_id if good_id else None
    echo_op = op if isinstance(op, str) else None
    if not good_id:
        raise ProtocolError("request: 'id' must be an integer", None, echo_op)
    if op not in OPS:
        raise ProtocolError(f"request: unknown op {op!r}; expected one of {OPS}", echo_id, echo_op)
    assert isinstance(req_id, int)
    return Request(op=op, id=req_id)


def send_all(sock: socket.socket, data: bytes) -> None:
    """Write until every byte is out (send may take fewer bytes than offered)."""
    view = memoryview(data)
    while view:
        sent = sock.send(view)
        view = view[sent:]


class LineReader:
    """Buffered line reader for one socket: ``read_line`` loops on recv until a newline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.skipping = False  # discarding the rest of an oversized line

    def read_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream.

        Raises LineTooLong once per oversized line and then drops it up to its newline,
        so the connection stays usable for the next request.
        """
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                if self.skipping:
                    self.skipping = False
                    continue
                if len(line) > MAX_LINE:
                    raise LineTooLong(f"request: line longer than {MAX_LINE} bytes")
                return line
            if len(self.buf) > MAX_LINE:
                self.buf.clear()
                if not self.skipping:
                    self.skipping = True
                    raise LineTooLong(f"request: line longer than {MAX_LINE} bytes")
            chunk = self.sock.recv(_RECV)
            if not chunk:
                return None
            self.buf += chunk
