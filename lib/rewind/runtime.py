"""Starting the runtime locally and talking to it over HTTP (the CLI, tests, benchmarks).

``LocalRuntime`` runs the built proxy the way the image does, without Docker: the
proxy starts the launcher (and the file sidecar) on /init. ``ActionClient`` sends
OpenWhisk-shaped /init and /run requests to any runtime on loopback.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
_REPO_PROXY = Path(__file__).resolve().parents[2] / "build" / "proxy"


class RuntimeError_(Exception):
    """The local runtime could not be started or stopped."""


def find_proxy() -> str:
    """The proxy binary: $REWIND_PROXY, the repository build, PATH, or /bin/proxy."""
    env = os.environ.get("REWIND_PROXY")
    if env:
        return env
    if _REPO_PROXY.is_file():
        return str(_REPO_PROXY)
    return shutil.which("proxy") or "/bin/proxy"


def find_compiler() -> str:
    """The compile step installed beside this interpreter."""
    beside = Path(sys.executable).parent / "rewind-compile"
    if beside.is_file():
        return str(beside)
    return shutil.which("rewind-compile") or "/bin/compile"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    """One HTTP answer from the runtime."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class ActionClient:
    """Sends /init and /run like an OpenWhisk invoker (any process)."""

    host: str = "127.0.0.1"
    port: int = 8080
    timeout: float = 60.0

    def post(self, path: str, body: bytes | str | dict[str, Any] | list[Any]) -> Response:
        """POST ``body`` (bytes sent as is, anything else JSON-encoded)."""
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, data, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return Response(resp.status, resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        """GET ``path`` (e.g. ``/rewind/status``)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return Response(resp.status, resp.read())
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        """The runtime's ``GET /rewind/status``: memory backend, reason, fail-closed."""
        resp = self.get("/rewind/status")
        if resp.status != 200:
            raise RuntimeError_(f"/rewind/status answered {resp.status}: {resp.body!r}")
        return resp.json()  # type: ignore[no-any-return]

    def init(
        self,
        code: str | bytes,
        main: str = "main",
        env: dict[str, Any] | None = None,
        binary: bool | None = None,
    ) -> Response:
        """Send /init; bytes are sent base64-encoded as a binary (zip) action."""
        if isinstance(code, bytes):
            code_text, is_binary = base64.b64encode(code).decode(), True
        else:
            code_text, is_binary = code, False
        value = {
            "name": "action",
            "main": main,
            "binary": is_binary if binary is None else binary,
            "code": code_text,
            "env": env,
        }
        return self.post("/init", {"value": value})

    def run(self, value: Any = None, deadline_s: float = 60.0, **context: str) -> Response:
        """Send /run with the invoker's context keys (all strings, deadline in epoch ms)."""
        body: dict[str, Any] = {
            "value": {} if value is None else value,
            "namespace": "guest",
            "action_name": "/guest/action",
            "action_version": "0.0.1",
            "activation_id": uuid.uuid4().hex,
            "transaction_id": uuid.uuid4().hex,
            "deadline": str(int((time.time() + deadline_s) * 1000)),
        }
        body.update(context)
        return self.post("/run", body)

    def wait_ready(
        self, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Wait until the port accepts connections."""
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError_(f"the runtime exited with code {proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError_(f"the runtime did not listen on {self.host}:{self.port}")


@dataclass
class ServeOptions:
    """How ``rewind serve`` runs the runtime."""

    port: int = 8080
    memory: str | None = None
    files: str | None = None
    checkpoint: str | None = None
    warmup: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # Default /init env (``--env``), under every /init's own env; REWIND_INIT_ENV.
    init_env: dict[str, str] = field(default_factory=dict)
    # Private /tmp, /var/tmp, /dev/shm, /run/lock and IPC namespace (root only); None:
    # with --files local. Tests of the insecure baseline use it to keep off the host.
    private: bool | None = None


def serve_command(opts: ServeOptions, workdir: str) -> tuple[list[str], dict[str, str]]:
    """The proxy command line and environment for ``rewind serve``.

    Like the image's proxy, it passes the container-level ``__OW_*`` variables of its
    environment (``__OW_API_HOST``...) through to the action, and REWIND_* settings and
    OW_DEBUG to the runtime; the shell's other OW_* variables do not configure it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REWIND_", "OW_", "__OW_"))}
    env.update(
        {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("REWIND_", "__OW_")) or k == "OW_DEBUG"
        }
    )
    env.update(
        {
            "OW_COMPILER": find_compiler(),
            "OW_WAIT_FOR_ACK": "1",
            "OW_LOG_INIT_ERROR": "1",
            "REWIND_ACTION_ROOT": os.path.join(workdir, "action"),
            "REWIND_SIDECAR": "unix:" + os.path.join(workdir, "sidecar.sock"),
            "REWIND_SIDECAR_CMD": f"{sys.executable} -m rewind.sidecar",
            "REWIND_SNAPSHOT_DIR": os.path.join(workdir, "snapshots"),
        }
    )
    for key, val in (
        ("REWIND_MEMORY", opts.memory),
        ("REWIND_FILES", opts.files),
        ("REWIND_CHECKPOINT", opts.checkpoint),
        ("REWIND_WARMUP", opts.warmup),
    ):
        if val is not None:
            env[key] = val
    if opts.init_env:
        env["REWIND_INIT_ENV"] = json.dumps(opts.init_env)
    env.update(opts.extra_env)
    cmd = [find_proxy(), "-port", str(opts.port)]
    private = opts.private if opts.private is not None else env.get("REWIND_FILES") == "local"
    if private:
        # Outside a container /tmp and the other scratch places, the IPC namespace and
        # the session keyring are the host's: give the runtime private ones.
        if os.geteuid() != 0:
            raise RuntimeError_(
                "REWIND_FILES=local outside a container needs root, to give the action a "
                "private /tmp in its own mount namespace; run the image, or use --files off"
            )
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        needed = [str(_REPO_PROXY.parents[1]), sys.prefix, cmd[0], workdir]
        inner = private_places_script(needed)
        cmd = [unshare, "--mount", "--ipc", "--propagation", "private"]
        cmd += [sys.executable, "-m", "rewind.memory.keyrings"]  # its own session keyring
        cmd += ["/bin/sh", "-c", inner, "sh", find_proxy(), "-port", str(opts.port)]
    return cmd, env


#: The places every user can write on a usual host; ``rewind serve`` hides them.
PRIVATE_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def private_places_script(needed: list[str], places: tuple[str, ...] = PRIVATE_PLACES) -> str:
    """Shell run in new mount and IPC namespaces: an empty tmpfs on each of ``places``
    that exists, this namespace's mqueue fs on /dev/mqueue, then exec "$@".

    Paths the runtime itself needs (a checkout, a virtualenv, its work directory) that
    live in one of those places are opened first and bind-mounted back from the open
    descriptor; the file engine skips mount points, so they are never rewound.
    """
    real = sorted({os.path.realpath(p) for p in needed})
    real = [os.path.dirname(p) if os.path.isfile(p) else p for p in real]
    lines = ["set -e"]
    fd = 3
    for place in places:
        if not os.path.isdir(place) or os.path.islink(place):
            continue
        keep: list[str] = []
        for path in sorted(p for p in real if p.startswith(place + "/")):
            if not any(path.startswith(k + "/") for k in keep):
                keep.append(path)
        opened = []
        for path in keep:
            if fd > 9:  # sh redirects single-digit descriptors only
                raise RuntimeError_(f"too many runtime paths under {place}: {keep}")
            lines.append(f"exec {fd}<{shlex.quote(path)}")
            opened.append((fd, path))
            fd += 1
        lines.append(f"mount -t tmpfs -o mode=1777 rewind-private {shlex.quote(place)}")
        for n, path in opened:
            lines += [
                f"mkdir -p {shlex.quote(path)}",
                f"mount --no-canonicalize --bind /proc/self/fd/{n} {shlex.quote(path)}",
                f"exec {n}<&-",
            ]
    lines.append("if [ -d /dev/mqueue ]; then mount -t mqueue rewind-mqueue /dev/mqueue; fi")
    lines.append('exec "$@"')
    return "\n".join(lines)


class LocalRuntime:
    """The proxy running locally in a private work directory (``rewind serve``)."""

    def __init__(
        self,
        opts: ServeOptions,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        self.opts = opts
        self.workdir = tempfile.mkdtemp(prefix="rewind-serve-", dir="/var/tmp")
        os.chmod(self.workdir, 0o755)
        cmd, env = serve_command(opts, self.workdir)
        if not os.path.isfile(cmd[0]) and not os.path.isfile(find_proxy()):
            raise RuntimeError_(f"proxy binary not found at {find_proxy()}: run `make dev`")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.workdir, stdout=stdout, stderr=stderr, start_new_session=True
        )
        self.client = ActionClient(port=opts.port)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the proxy listens."""
        self.client.wait_ready(timeout, self.proc)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the proxy (it stops the launcher and sidecar), then clean up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
