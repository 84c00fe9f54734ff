"""The file sidecar's server loop (sidecar process).

Accepts connections on a unix socket (mode 0600, or the driver's ``socket_mode``) or TCP, one
thread per connection; every operation is serialized per driver with a lock, unless the
driver declares ``thread_safe`` (the docker driver locks per container). Signal handlers only
record the signal; the accept loop wakes through ``set_wakeup_fd`` and exits cleanly. Quiet
unless REWIND_DEBUG or OW_DEBUG is set, because the container's stderr is attributed to
activations (a failure reaches the launcher in its reply).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import stat
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rewind import settings
from rewind.debug import debug_enabled
from rewind.files.model import SnapshotError
from rewind.sidecar.protocol import (
    LineReader,
    ProtocolError,
    Request,
    error_reply,
    ok_reply,
    parse_address,
    parse_request,
    send_all,
)

DEFAULT_LISTEN = settings.SIDECAR.default


class Driver(Protocol):
    """What the server needs from a driver; ``peer`` is the caller's connected socket.

    Optional attributes: ``socket_mode`` (the unix socket's mode, default 0600) and
    ``thread_safe`` (True: the server does not serialize operations itself).
    """

    def checkpoint(self, peer: socket.socket) -> dict[str, Any]: ...
    def rewind(self, peer: socket.socket) -> dict[str, Any]: ...
    def status(self, peer: socket.socket) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ServerConfig:
    """Server settings, loaded once from options and an injected environment."""

    listen: str = DEFAULT_LISTEN
    debug: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], listen: str | None = None) -> ServerConfig:
        """``--listen`` wins over REWIND_SIDECAR; REWIND_DEBUG or OW_DEBUG logs (rewind.debug)."""
        address = listen or environ.get(settings.SIDECAR.name, "").strip() or DEFAULT_LISTEN
        parse_address(address)  # validate now, with a clear error
        return cls(listen=address, debug=debug_enabled(environ))


class SidecarServer:
    """Serves one driver on one listening socket until SIGTERM/SIGINT."""

    def __init__(self, driver: Driver, config: ServerConfig, log: TextIO | None = None) -> None:
        self.driver = driver
        self.config = config
        self.log = log if log is not None else sys.stderr
        self.lock = threading.Lock()  # one operation at a time on the driver
        self.concurrent = bool(getattr(driver, "thread_safe", False))
        self.signals: list[int] = []
        self.listener: socket.socket | None = None
        self.unix_path: str | None = None

    def _say(self, line: str) -> None:
        # Debug only, failures too: the caller gets the error in its reply (the launcher
        # then fails closed and says why), and this stream is some activation's log.
        if self.config.debug:
            print(f"rewind-sidecar: {line}", file=self.log, flush=True)

    def bind(self) -> None:
        """Create the listening socket. A unix socket appears at its path only once it
        listens (bound under a temporary name, chmod 0600 or the driver's ``socket_mode``,
        then renamed into place)."""
        family, addr = parse_address(self.config.listen)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_UNIX:
                assert isinstance(addr, str)
                self._bind_unix(sock, addr)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
                sock.listen(64)
        except BaseException:
            sock.close()
            raise
        self.listener = sock

    def _bind_unix(self, sock: socket.socket, path: str) -> None:
        mode = int(getattr(self.driver, "socket_mode", 0o600))
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            # A socket others may connect to needs a directory they can traverse.
            os.makedirs(parent, mode=0o755 if mode & 0o066 else 0o700)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket; refusing to replace it")
            os.unlink(path)  # stale socket of an earlier sidecar
        except FileNotFoundError:
            pass
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        old_umask = os.umask(0o177)  # the socket is never group/other accessible, not even briefly
        try:
            sock.bind(tmp)
        finally:
            os.umask(old_umask)
        os.chmod(tmp, mode)
        sock.listen(64)
        os.rename(tmp, path)
        self.unix_path = path

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # recorded only; the loop acts on it

    def run(self) -> int:
        """Accept until a signal arrives; then finish the running operation and exit 0."""
        if self.listener is None:
            self.bind()
        assert self.listener is not None
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.signals:
                for key, _ in sel.select():
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            wake_r.recv(512)
                    elif not self.signals:
                        self._accept()
        finally:
            sel.close()
            signal.set_wakeup_fd(old_fd)
            for s, handler in old.items():
                signal.signal(s, handler)
            wake_r.close()
            wake_w.close()
            self.shutdown()
        return 0

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()

    def shutdown(self) -> None:
        """Stop listening, wait for a running operation, release the driver."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
            self.unix_path = None
        with self.lock:
            self.driver.close()

    def serve_connection(self, conn: socket.socket) -> None:
        """Connection thread: one reply per request line, until the peer closes."""
        reader = LineReader(conn)
        with conn:
            while True:
                try:
                    line = reader.read_line()
                    if line is None:
                        return
                    reply = self.handle_line(line, conn)
                except ProtocolError as exc:
                    reply = error_reply(exc.req_id, exc.op, str(exc))
                except OSError:
                    return  # the peer went away; nothing to reply to
                try:
                    send_all(conn, reply)
                except OSError:
                    return

    def handle_line(self, line: bytes, conn: socket.socket) -> bytes:
        """Parse and run one request; every outcome becomes exactly one reply."""
        try:
            req = parse_request(line)
        except ProtocolError as exc:
            self._say(f"bad request: {exc}")
            return error_reply(exc.req_id, exc.op, str(exc))
        return self.dispatch(req, conn)

    def dispatch(self, req: Request, conn: socket.socket) -> bytes:
        """Run one operation under the driver lock."""
        guard = contextlib.nullcontext() if self.concurrent else self.lock
        try:
            with guard:
                metrics = getattr(self.driver, req.op)(conn)
        except (SnapshotError, OSError, ValueError) as exc:
            same_op = isinstance(exc, SnapshotError) and exc.op == req.op
            msg = f"{req.op} failed: {exc.message if same_op else exc}"  # type: ignore[union-attr]
            self._say(msg)
            return error_reply(req.id, req.op, msg)
        except Exception as exc:  # a bug must still get its one reply, and fail closed
            msg = f"{req.op} failed: internal error: {exc!r}"
            self._say(msg)
            return error_reply(req.id, req.op, msg)
        if self.config.debug and req.op != "status":
            parts = " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in metrics.items()
                if not isinstance(v, (dict, list))
            )
            self._say(f"{req.op} {parts}")
        return ok_reply(req.id, req.op, metrics)
