"""An OpenWhisk invoker emulator: runs actions in real containers of a runtime image.

Runs in the caller's process (tests, ``rewind invoke --docker``, the benchmarks). It does
what OpenWhisk's invoker does to an action container (``DockerContainerFactory``,
``DockerContainer``, ``ContainerProxy``): ``docker run`` with the same resource flags,
``/init`` with retries until the proxy listens, ``/run`` envelopes with the activation
context, the action time limit (exceeding it destroys the container), log collection up
to the two sentinels, and a pool of warm containers per action.

It drives the ``docker`` command line (``/usr/bin/docker`` by default) with
:mod:`subprocess` and speaks HTTP with :mod:`http.client`, so it needs nothing beyond
the standard library. Container ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
"""The line the runtime writes to stdout and stderr after every activation."""

DEFAULT_DOCKER = "/usr/bin/docker"
DEFAULT_API_HOST = "https://localhost"
# An obviously fake key: the emulator never talks to a controller.
DEFAULT_API_KEY = "00000000-0000-0000-0000-000000000000:rewind-invoker-emulator"
# The invoker's fixed container arguments (DockerContainerFactory.createContainer).
INVOKER_DEFAULT_ARGS: tuple[str, ...] = (
    "--cap-drop",
    "NET_RAW",
    "--cap-drop",
    "NET_ADMIN",
    "--ulimit",
    "nofile=1024:1024",
    "--pids-limit",
    "1024",
)
ACTION_PORT = 8080
# Errors that mean "the proxy does not listen yet": the invoker retries /init on them.
# docker-proxy accepts before the container listens, then closes: sending a large /init
# body then fails with EPIPE.
_NOT_LISTENING = (
    ConnectionRefusedError,
    ConnectionResetError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
)


class InvokerError(Exception):
    """A container could not be created, reached or removed; the message says which step."""


@dataclass(frozen=True)
class ActionSpec:
    """An action as the invoker knows it: code, entry point, init env and identity.

    ``code`` as ``bytes`` (a zip) is sent base64-encoded with ``binary`` true, as the
    invoker does for binary actions; ``str`` code is sent as text.
    """

    code: str | bytes
    main: str = "main"
    binary: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "action"
    namespace: str = "guest"
    version: str = "0.0.1"
    provide_api_key: bool = True

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], main: str = "main") -> ActionSpec:
        """Load a ``.py`` source or a ``.zip`` archive from disk (caller's process)."""
        p = Path(path)
        raw = p.read_bytes()
        name = p.stem.replace(".", "_") or "action"
        if raw.startswith(b"PK\x03\x04"):
            return cls(code=raw, main=main, binary=True, name=name)
        return cls(code=raw.decode("utf-8"), main=main, name=name)

    @property
    def qualified_name(self) -> str:
        """``/namespace/name``, as the invoker sends it in ``action_name``."""
        return f"/{self.namespace}/{self.name}"

    def key(self) -> str:
        """A digest naming this action's code and settings: the warm pool's key."""
        digest = hashlib.sha256()
        code = self.code.encode("utf-8") if isinstance(self.code, str) else self.code
        for part in (code, self.main.encode(), json.dumps(dict(self.env), sort_keys=True)):
            digest.update(part if isinstance(part, bytes) else part.encode())
            digest.update(b"\0")
        digest.update(f"{self.binary}{self.qualified_name}{self.version}".encode())
        return digest.hexdigest()

    def init_value(self) -> dict[str, Any]:
        """The ``value`` of the ``/init`` body (``WhiskAction.containerInitializer``)."""
        if isinstance(self.code, bytes):
            code, binary = base64.b64encode(self.code).decode("ascii"), True
        else:
            code, binary = self.code, self.binary
        return {
            "name": self.name,
            "main": self.main,
            "binary": binary,
            "code": code,
            "env": dict(self.env),
        }


@dataclass
class Activation:
    """What one invocation produced, as the invoker would record it.

    ``status`` is the HTTP status of ``/run`` (of ``/init`` when the cold start failed),
    or 0 when no reply came (time limit exceeded, connection lost).
    """

    status: int
    result: Any
    stdout: str
    stderr: str
    container: str
    activation_id: str = ""
    duration_ms: float = 0.0
    cold: bool = False
    init_status: int | None = None
    timed_out: bool = False
    logs_complete: bool = True

    @property
    def ok(self) -> bool:
        """The runtime answered 200 with a JSON object or array (a success or an
        application error; see :attr:`application_error`)."""
        return self.status == 200 and isinstance(self.result, dict | list)

    @property
    def application_error(self) -> bool:
        """200 with an ``error`` field: the action failed, the container stays warm."""
        return self.ok and isinstance(self.result, dict) and "error" in self.result

    @property
    def developer_error(self) -> bool:
        """Anything but :attr:`ok`: the invoker destroys the container."""
        return not self.ok


@dataclass
class HttpReply:
    """One HTTP exchange with a container's proxy."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or the body text when it is not JSON."""
        text = self.body.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text


class Container:
    """One action container created by :class:`Invoker` (used in the caller's process).

    Keeps the log offsets of each stream so that every activation's logs start where
    the previous one's ended, as ``DockerContainer.logs`` does.
    """

    def __init__(self, docker: str, name: str, container_id: str, port: int) -> None:
        self.docker = docker
        self.name = name
        self.id = container_id
        self.port = port
        self.initialized_key: str | None = None
        self.paused = False
        self._offsets = [0, 0]  # characters of stdout, stderr already attributed

    def __repr__(self) -> str:
        return f"Container(name={self.name!r}, port={self.port})"

    def post(self, path: str, body: Any, timeout_s: float) -> HttpReply:
        """POST ``body`` as JSON to the proxy; socket errors propagate."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return HttpReply(status=resp.status, body=resp.read())
        finally:
            conn.close()

    def init(self, value: Mapping[str, Any], timeout_s: float) -> HttpReply:
        """POST ``/init``, retrying while the proxy is not listening yet (like the
        invoker's ``Container.initialize``, ``retry = true``) until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self.post("/init", {"value": dict(value)}, max(remaining, 0.05))
            except _NOT_LISTENING:
                if remaining <= 0:
                    raise
                time.sleep(min(0.05, max(remaining, 0.0)))

    def logs(self) -> tuple[str, str]:
        """The container's whole stdout and stderr logs so far."""
        proc = _docker(self.docker, ["logs", self.id], check=False)
        if proc.returncode != 0:
            raise InvokerError(f"docker logs {self.name} failed: {proc.stderr.strip()}")
        return proc.stdout, proc.stderr

    def collect_logs(self, wait_s: float) -> tuple[str, str, bool]:
        """This activation's stdout and stderr: from the previous offsets up to the
        sentinel on each stream, waiting up to ``wait_s`` for both sentinels.

        Returns ``(stdout, stderr, complete)``; without both sentinels in time it
        returns everything up to now and ``complete`` is false.
        """
        deadline = time.monotonic() + wait_s
        marker = SENTINEL + "\n"
        while True:
            streams = self.logs()
            ends = [
                text.find(marker, off) for text, off in zip(streams, self._offsets, strict=True)
            ]
            if all(end >= 0 for end in ends) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        parts: list[str] = []
        complete = True
        for i, (text, end) in enumerate(zip(streams, ends, strict=True)):
            if end < 0:
                complete = False
                parts.append(text[self._offsets[i] :])
                self._offsets[i] = len(text)
            else:
                parts.append(text[self._offsets[i] : end])
                self._offsets[i] = end + len(marker)
        return parts[0], parts[1], complete


class Invoker:
    """Creates action containers of ``image`` and runs activations in them.

    Mirrors the invoker's ``DockerContainerFactory`` flags: ``--cpu-shares`` (by default
    the memory's share of ``user_memory_mb`` out of 1024), ``--memory`` and
    ``--memory-swap`` both ``memory_mb``, ``--network``, ``-e __OW_API_HOST`` and the
    invoker's fixed ``--cap-drop``/``--ulimit``/``--pids-limit`` flags, then
    ``extra_args`` (e.g. ``--security-opt``, ``-v`` for a sidecar socket). Port 8080 is
    published on a random free port of 127.0.0.1.

    Idle containers stay warm, at most ``max_idle`` per action, and are reused for the
    same action; a developer error (any reply other than 200 with an object or array, or
    the time limit) destroys the container. ``pause_idle`` pauses idle containers the way
    the invoker does after its pause grace. Not thread-safe: one activation at a time.
    """

    def __init__(
        self,
        image: str,
        memory_mb: int = 256,
        *,
        cpu_shares: int | None = None,
        user_memory_mb: int = 2048,
        network: str = "bridge",
        api_host: str = DEFAULT_API_HOST,
        api_key: str = DEFAULT_API_KEY,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        invoker_default_args: Sequence[str] = INVOKER_DEFAULT_ARGS,
        docker: str = DEFAULT_DOCKER,
        max_idle: int = 1,
        pause_idle: bool = False,
        log_wait_s: float = 10.0,
        start_timeout_s: float = 60.0,
        context_in_init_env: bool = False,
    ) -> None:
        self.image = image
        self.memory_mb = memory_mb
        self.cpu_shares = cpu_shares or max(2, 1024 * memory_mb // user_memory_mb)
        self.network = network
        self.api_host = api_host
        self.api_key = api_key
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.invoker_default_args = list(invoker_default_args)
        self.docker = docker
        self.max_idle = max_idle
        self.pause_idle = pause_idle
        self.log_wait_s = log_wait_s
        self.start_timeout_s = start_timeout_s
        self.context_in_init_env = context_in_init_env
        self._prefix = f"rewind_wsk{os.getpid()}_{secrets.token_hex(3)}_"
        self._count = 0
        self._containers: dict[str, Container] = {}
        self._idle: dict[str, list[Container]] = {}
        self._lock = threading.Lock()  # guards _count, _containers and _idle

    def __enter__(self) -> Invoker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- containers -------------------------------------------------------------------

    def run_args(self, name: str) -> list[str]:
        """The ``docker run`` arguments for a container called ``name``."""
        args = [
            "run",
            "-d",
            "--cpu-shares",
            str(self.cpu_shares),
            "--memory",
            f"{self.memory_mb}m",
            "--memory-swap",
            f"{self.memory_mb}m",
            "--network",
            self.network,
            "-e",
            f"__OW_API_HOST={self.api_host}",
        ]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        args += ["--name", name, "-p", f"127.0.0.1::{ACTION_PORT}"]
        args += self.invoker_default_args + self.extra_args + [self.image]
        return args

    def create(self, action_name: str = "action", namespace: str = "guest") -> Container:
        """``docker run`` a new container (not initialised) and find its loopback port."""
        with self._lock:
            self._count += 1
            name = _container_name(f"{self._prefix}{self._count}_{namespace}_{action_name}")
        proc = _docker(self.docker, self.run_args(name), check=False, timeout_s=120)
        if proc.returncode != 0:
            _docker(self.docker, ["rm", "-f", name], check=False)
            raise InvokerError(f"docker run {self.image} failed: {proc.stderr.strip()}")
        container_id = proc.stdout.strip()
        try:
            port = self._published_port(container_id)
        except InvokerError:
            _docker(self.docker, ["rm", "-f", container_id], check=False)
            raise
        container = Container(self.docker, name, container_id, port)
        with self._lock:
            self._containers[container.id] = container
        return container

    def _published_port(self, container_id: str) -> int:
        proc = _docker(self.docker, ["port", container_id, f"{ACTION_PORT}/tcp"], check=False)
        for line in proc.stdout.splitlines():
            host, _, port = line.strip().rpartition(":")
            if host == "127.0.0.1" and port.isdigit():
                return int(port)
        raise InvokerError(
            f"container {container_id[:12]} has no 127.0.0.1 port for {ACTION_PORT}: "
            f"{(proc.stdout + proc.stderr).strip()!r}"
        )

    def destroy(self, container: Container) -> None:
        """``docker rm -f`` the container and forget it."""
        with self._lock:
            self._containers.pop(container.id, None)
            for idle in self._idle.values():
                if container in idle:
                    idle.remove(container)
        _docker(self.docker, ["rm", "-f", container.id], check=False)

    def close(self) -> None:
        """Remove every container this invoker created."""
        with self._lock:
            containers = list(self._containers.values())
            self._containers.clear()
            self._idle.clear()
        if containers:
            _docker(self.docker, ["rm", "-f", *(c.id for c in containers)], check=False)

    @property
    def containers(self) -> list[Container]:
        """The live containers, warm or busy."""
        with self._lock:
            return list(self._containers.values())

    # -- activations --------------------------------------------------------------------

    def run_body(self, action: ActionSpec, params: Any, timeout_s: float) -> dict[str, Any]:
        """A ``/run`` envelope as ``ContainerProxy.initializeAndRun`` builds it: the
        params under ``value`` and the activation context as strings."""
        body: dict[str, Any] = {"value": params}
        body.update(self.context(action, timeout_s))
        return body

    def context(self, action: ActionSpec, timeout_s: float) -> dict[str, str]:
        """The activation context keys (all strings; ``deadline`` in epoch ms)."""
        ctx = {
            "namespace": action.namespace,
            "action_name": action.qualified_name,
            "action_version": action.version,
            "activation_id": secrets.token_hex(16),
            "transaction_id": secrets.token_hex(16),
            "deadline": str(int((time.time() + timeout_s) * 1000)),
        }
        if action.provide_api_key:
            ctx["api_key"] = self.api_key
        return ctx

    def invoke(self, action: ActionSpec, params: Any = None, timeout_s: float = 60.0) -> Activation:
        """Run one activation: take a warm container of this action or create and
        initialise one, POST ``/run`` within ``timeout_s``, collect the logs, then keep
        the container warm or destroy it (developer error, time limit)."""
        params = {} if params is None else params
        start = time.monotonic()
        container = self._take_idle(action.key())
        cold = container is None
        init_status: int | None = None
        if container is None:
            container = self.create(action.name, action.namespace)
            failed = self._initialize(container, action, timeout_s)
            if failed is not None:
                failed.duration_ms = (time.monotonic() - start) * 1000
                return failed
            init_status = 200
        body = self.run_body(action, params, timeout_s)
        timed_out = False
        try:
            reply = container.post("/run", body, timeout_s)
            status, result = reply.status, reply.json()
        except TimeoutError:
            timed_out = True
            status = 0
            limit_ms = int(timeout_s * 1000)
            result = {"error": f"The action exceeded its time limits of {limit_ms} milliseconds."}
        except (OSError, http.client.HTTPException) as exc:
            status, result = 0, {"error": f"The action did not produce a valid response: {exc}"}
        activation = Activation(
            status=status,
            result=result,
            stdout="",
            stderr="",
            container=container.name,
            activation_id=body["activation_id"],
            cold=cold,
            init_status=init_status,
            timed_out=timed_out,
        )
        # After a developer error the invoker does not wait long for the sentinels.
        wait = 0.5 if timed_out or status == 0 else self.log_wait_s
        self._attach_logs(activation, container, wait)
        activation.duration_ms = (time.monotonic() - start) * 1000
        if activation.developer_error:
            self.destroy(container)
        else:
            self._release(action.key(), container)
        return activation

    def _initialize(
        self, container: Container, action: ActionSpec, timeout_s: float
    ) -> Activation | None:
        """``/init`` a fresh container; on failure destroy it and return the failed
        activation, as the invoker records an init failure."""
        value = action.init_value()
        if self.context_in_init_env:
            ctx = self.context(action, timeout_s)
            value["env"] = {**{f"__OW_{k.upper()}": v for k, v in ctx.items()}, **value["env"]}
        try:
            reply = container.init(value, max(timeout_s, self.start_timeout_s))
            status, result = reply.status, reply.json()
        except (TimeoutError, *_NOT_LISTENING):
            status = 0
            result = {"error": f"The action did not initialize within {timeout_s:g} s."}
        except (OSError, http.client.HTTPException) as exc:
            status, result = 0, {"error": f"The action failed to initialize: {exc}"}
        if status == 200:
            container.initialized_key = action.key()
            return None
        activation = Activation(
            status=status,
            result=result,
            stdout="",
            stderr="",
            container=container.name,
            cold=True,
            init_status=status,
            timed_out=status == 0,
        )
        self._attach_logs(activation, container, 2.0)
        self.destroy(container)
        return activation

    def _attach_logs(self, activation: Activation, container: Container, wait_s: float) -> None:
        try:
            out, err, complete = container.collect_logs(wait_s)
        except InvokerError as exc:
            out, err, complete = "", f"(logs unavailable: {exc})\n", False
        activation.stdout, activation.stderr, activation.logs_complete = out, err, complete

    def _take_idle(self, key: str) -> Container | None:
        with self._lock:
            idle = self._idle.get(key)
            container = idle.pop() if idle else None
        if container is not None and container.paused:
            _docker(self.docker, ["unpause", container.id], check=True)
            container.paused = False
        return container

    def _release(self, key: str, container: Container) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            keep = len(idle) < self.max_idle
            if keep:
                idle.append(container)
        if not keep:
            self.destroy(container)
        elif self.pause_idle:
            _docker(self.docker, ["pause", container.id], check=True)
            container.paused = True


def _container_name(raw: str) -> str:
    """A valid Docker container name: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in raw)
    return cleaned if cleaned[:1].isalnum() else f"w{cleaned}"


def _docker(
    docker: str, args: Iterable[str], *, check: bool, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (caller's process); ``check`` raises :class:`InvokerError`."""
    cmd = [docker, *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvokerError(f"{' '.join(cmd[:3])} failed: {exc}") from exc
    if check and proc.returncode != 0:
        raise InvokerError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()}")
    return proc
