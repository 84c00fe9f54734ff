"""The sidecar's ``docker`` driver: rewinds each action container's whole writable layer.

Runs on the host as root, in one sidecar process serving every action container of the
host over one unix socket (mounted into the containers). The caller's container is learned
from the kernel, never from the request: ``SO_PEERCRED`` (pinned with ``SO_PEERPIDFD``
where the kernel has it) → pid → ``/proc/<pid>/cgroup`` → the 64-hex container id; for a
TCP connection, the source address matched against the containers' addresses through the
Docker API. The overlay2 layers come from ``inspect_container`` (``GraphDriver.Data``);
the work itself is ``rewind.files.overlay``. Docker is imported lazily (the ``docker``
extra), so the local driver never needs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shutil
import signal
import socket
import stat
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rewind import settings
from rewind.files.model import SnapshotError
from rewind.files.overlay import OverlaySnapshot

DEFAULT_HOST_SNAPSHOT_DIR = settings.HOST_SNAPSHOT_DIR.default
DEFAULT_MAX_BYTES = int(settings.HOST_MAX_BYTES.default)
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux ≥ 6.5
_ID = re.compile(r"[0-9a-f]{64}")
# A cgroup path component naming a container: "docker-<id>.scope" (systemd driver),
# "<id>" below a "docker" component (cgroupfs driver), "cri-containerd-<id>.scope"...
_COMPONENT = re.compile(r"^(?:[a-z-]*-)?([0-9a-f]{64})(?:\.scope)?$")
_SWEEP_EVERY_S = 30.0


class DriverError(SnapshotError):
    """A failure of the docker driver (config, identity, Docker API, rewind before checkpoint)."""


def container_id_from_cgroup(text: str) -> str | None:
    """The container id in the contents of ``/proc/<pid>/cgroup``, or None.

    Handles cgroup v2 (``0::/system.slice/docker-<id>.scope``, ``0::/docker/<id>``) and v1
    (``N:controller:/docker/<id>``). The outermost id-like component wins: a process can
    create sub-cgroups below its own (with any names) but never rename its ancestors. Lines
    that disagree make the answer None.
    """
    found: set[str] = set()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for component in parts[2].split("/"):
            match = _COMPONENT.match(component)
            if match:
                found.add(match.group(1))
                break
    return found.pop() if len(found) == 1 else None


def _parse_size(raw: str) -> int:
    text = raw.strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    mult = 1
    if text[-1:] in units:
        mult = units[text[-1]]
        text = text[:-1]
    if not text.isdigit() or int(text) <= 0:
        raise DriverError(
            "config", f"REWIND_HOST_MAX_BYTES={raw!r}: expected a positive byte count"
        )
    return int(text) * mult


@dataclass(frozen=True)
class DockerConfig:
    """Where the host snapshots live and how much each container may use."""

    snapshot_dir: str = DEFAULT_HOST_SNAPSHOT_DIR
    max_bytes: int = DEFAULT_MAX_BYTES
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], snapshot_dir: str | None = None) -> DockerConfig:
        """``--snapshot-dir`` (or REWIND_HOST_SNAPSHOT_DIR) and REWIND_HOST_MAX_BYTES
        (bytes, or with a k/m/g suffix); DOCKER_HOST & co. reach the Docker client."""
        snap = (
            snapshot_dir
            or environ.get(settings.HOST_SNAPSHOT_DIR.name, "").strip()
            or DEFAULT_HOST_SNAPSHOT_DIR
        )
        raw = environ.get(settings.HOST_MAX_BYTES.name, "").strip()
        max_bytes = _parse_size(raw) if raw else DEFAULT_MAX_BYTES
        return cls(snapshot_dir=snap, max_bytes=max_bytes, environ=dict(environ))

    def validate(self) -> None:
        if not os.path.isabs(self.snapshot_dir) or os.path.realpath(self.snapshot_dir) == "/":
            raise DriverError("config", f"snapshot dir {self.snapshot_dir!r} must be absolute")


@dataclass
class _Container:
    """What the driver keeps per container; ``lock`` serializes its operations."""

    id: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    snapshot: OverlaySnapshot | None = None
    attempted: bool = False  # a checkpoint was tried (there is only one try)
    gone: bool = False
    counts: dict[str, int] = field(
        default_factory=lambda: {"checkpoints": 0, "rewinds": 0, "errors": 0}
    )
    last: dict[str, Any] = field(default_factory=dict)
    entries: int = 0
    bytes: int = 0


class DockerDriver:
    """Checkpoint and rewind of each calling container's writable layer (host sidecar).

    Thread-safe: the server runs connections concurrently; operations on one container are
    serialized by that container's lock, different containers proceed in parallel.
    """

    #: The socket is mounted into every action container and must be connectable by the
    #: function user. Safe: every verb acts only on the caller's own container.
    socket_mode = 0o666
    thread_safe = True

    def __init__(self, config: DockerConfig, client: Any = None) -> None:
        config.validate()
        if os.geteuid() != 0:
            raise DriverError("config", "the docker driver must run as root on the host")
        self.config = config
        self.client = client if client is not None else self._connect(config.environ)
        self.snapshot_dir = config.snapshot_dir
        os.makedirs(self.snapshot_dir, mode=0o700, exist_ok=True)
        os.chmod(self.snapshot_dir, 0o700)
        if not stat.S_ISDIR(os.lstat(self.snapshot_dir).st_mode):
            raise DriverError("config", f"{self.snapshot_dir} is not a directory")
        for name in os.listdir(self.snapshot_dir):
            if _ID.fullmatch(name):  # left by an earlier sidecar: its checkpoints are gone
                shutil.rmtree(os.path.join(self.snapshot_dir, name), ignore_errors=True)
        _raise_fd_limit()
        self._lock = threading.Lock()  # guards _containers, _died
        self._containers: dict[str, _Container] = {}
        self._died: set[str] = set()
        self._peers: weakref.WeakKeyDictionary[socket.socket, str] = weakref.WeakKeyDictionary()
        self._next_sweep = time.monotonic() + _SWEEP_EVERY_S
        self._closing = threading.Event()
        self._events: Any = None
        self._watcher = threading.Thread(target=self._watch, name="docker-events", daemon=True)
        self._watcher.start()

    @staticmethod
    def _connect(environ: Mapping[str, str]) -> Any:
        try:
            import docker  # the "docker" extra; only the host sidecar needs it
        except ImportError as exc:
            raise DriverError("config", f"the docker driver needs the docker SDK: {exc}") from None
        try:
            client = docker.from_env(environment=dict(environ), timeout=30)
            client.ping()
        except Exception as exc:  # docker.errors.DockerException and transport errors
            raise DriverError("config", f"cannot reach the Docker engine: {exc}") from None
        return client

    # -- identity -----------------------------------------------------------------------

    def identify(self, peer: socket.socket) -> str:
        """The id of the container the connection comes from; raises DriverError.

        Resolved once per connection (at its first request) and kept with it: the kernel
        fixed the credentials at connect time, and remembering the answer means a pid
        reused later cannot redirect an old connection to another container.
        """
        known = self._peers.get(peer)
        if known is not None:
            return known
        if peer.family == socket.AF_UNIX:
            cid = self._identify_unix(peer)
        else:
            cid = self._identify_tcp(peer)
        self._peers[peer] = cid
        return cid

    def _identify_unix(self, peer: socket.socket) -> str:
        creds = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid = int.from_bytes(creds[0:4], "little", signed=True)
        if pid <= 0:
            raise DriverError("identify", "the kernel reports no process for this connection")
        pidfd = -1
        try:
            pidfd = peer.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        except OSError as exc:
            if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL, errno.ESRCH):
                raise
        try:
            try:
                with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError as exc:
                raise DriverError("identify", f"the calling process {pid} is gone: {exc}") from None
            if pidfd >= 0:
                try:  # the pid still names the process that connected (not a reused pid)
                    signal.pidfd_send_signal(pidfd, 0)
                except ProcessLookupError:
                    raise DriverError("identify", f"the calling process {pid} is gone") from None
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        cid = container_id_from_cgroup(text)
        if cid is None:
            raise DriverError("identify", f"the calling process {pid} is not in a container")
        return cid

    def _identify_tcp(self, peer: socket.socket) -> str:
        host = peer.getpeername()[0]
        matches: list[str] = []
        for info in self._api("identify", lambda api: api.containers()):
            nets = ((info.get("NetworkSettings") or {}).get("Networks") or {}).values()
            addrs = {n.get("IPAddress") for n in nets} | {n.get("GlobalIPv6Address") for n in nets}
            if host in addrs:
                matches.append(info["Id"])
        if len(matches) != 1:
            raise DriverError("identify", f"the address {host} is not one running container's")
        return matches[0]

    # -- Docker API ---------------------------------------------------------------------

    def _api(self, op: str, call: Any) -> Any:
        try:
            return call(self.client.api)
        except Exception as exc:
            if type(exc).__name__ == "NotFound":
                raise DriverError(op, "the container no longer exists") from None
            raise DriverError(op, f"Docker API: {exc}") from None

    def _layers(self, cid: str, op: str) -> tuple[list[str], str, str]:
        info = self._api(op, lambda api: api.inspect_container(cid))
        if not (info.get("State") or {}).get("Running"):
            raise DriverError(op, "the container is not running")
        graph = info.get("GraphDriver") or {}
        data = graph.get("Data") or {}
        if graph.get("Name") != "overlay2" or not data.get("UpperDir"):
            raise DriverError(op, f"storage driver {graph.get('Name')!r} is not overlay2")
        lowers = [p for p in (data.get("LowerDir") or "").split(":") if p]
        upper, merged = data["UpperDir"], data["MergedDir"]
        for path in (upper, merged, *lowers):
            if not os.path.isabs(path):
                raise DriverError(op, f"Docker reported a relative layer path {path!r}")
        if not lowers:
            raise DriverError(op, "the container has no lower layers")
        _check_mounted(merged, op)
        return lowers, upper, merged

    # -- verbs --------------------------------------------------------------------------

    def _state(self, cid: str, create: bool) -> _Container | None:
        with self._lock:
            state = self._containers.get(cid)
            if state is None and create:
                if cid in self._died:
                    raise DriverError(
                        "checkpoint",
                        "this container stopped after an earlier checkpoint; its layer may "
                        "hold request data, so it is not checkpointed again",
                    )
                state = self._containers[cid] = _Container(cid)
            return state

    def checkpoint(self, peer: socket.socket) -> dict[str, Any]:
        """Record the caller's writable layer; once per container, ever."""
        cid = self.identify(peer)
        self._maybe_sweep()
        state = self._state(cid, create=True)
        assert state is not None
        with state.lock:
            if state.attempted:
                state.counts["errors"] += 1
                raise DriverError(
                    "checkpoint", "this container has a checkpoint already and it is kept"
                )
            state.attempted = True
            start = time.perf_counter()
            try:
                lowers, upper, merged = self._layers(cid, "checkpoint")
                snap = OverlaySnapshot.capture(
                    lowers,
                    upper,
                    merged,
                    os.path.join(self.snapshot_dir, cid),
                    self.config.max_bytes,
                )
            except SnapshotError as exc:
                state.counts["errors"] += 1
                shutil.rmtree(os.path.join(self.snapshot_dir, cid), ignore_errors=True)
                raise _in_container(exc, merged_hint(exc)) from None
            if state.gone:  # the container died while we copied
                snap.discard()
                raise DriverError("checkpoint", "the container stopped during the checkpoint")
            state.snapshot = snap
            state.counts["checkpoints"] += 1
            state.entries = len(snap.snap.entries)
            state.bytes = snap.bytes
            state.last = {
                "entries": state.entries,
                "bytes": snap.bytes,
                "ms": (time.perf_counter() - start) * 1000,
            }
            return dict(state.last, roots=1)

    def rewind(self, peer: socket.socket) -> dict[str, Any]:
        """Bring the caller's writable layer back to its checkpoint."""
        cid = self.identify(peer)
        state = self._state(cid, create=False)
        if state is None:
            raise DriverError("rewind", "no checkpoint has been taken for this container")
        with state.lock:
            if state.snapshot is None:
                state.counts["errors"] += 1
                raise DriverError("rewind", "no checkpoint has been taken for this container")
            merged = state.snapshot.merged
            try:
                _check_mounted(merged, "rewind")
                metrics = state.snapshot.rewind().as_dict()
            except SnapshotError as exc:
                state.counts["errors"] += 1
                raise _in_container(exc, merged) from None
            except Exception as exc:
                state.counts["errors"] += 1
                raise DriverError("rewind", f"internal error: {exc!r}") from exc
            state.counts["rewinds"] += 1
            state.entries = len(state.snapshot.snap.entries)
            state.last = metrics
            return metrics

    def status(self, peer: socket.socket) -> dict[str, Any]:
        """The caller's container: whether it is checkpointed, counts, last metrics."""
        cid = self.identify(peer)
        self._maybe_sweep()
        state = self._state(cid, create=False)
        out: dict[str, Any] = {"driver": "docker", "container": cid, "roots": 1}
        if state is None:
            return {
                **out,
                "checkpointed": False,
                "checkpoints": 0,
                "rewinds": 0,
                "errors": 0,
                "last": {},
            }
        with state.lock:
            return {
                **out,
                "checkpointed": state.snapshot is not None,
                **state.counts,
                "entries": state.entries,
                "bytes": state.bytes,
                "last": dict(state.last),
            }

    # -- cleanup ------------------------------------------------------------------------

    def forget(self, cid: str, died: bool = True) -> None:
        """Drop a container's snapshot (it stopped or was removed)."""
        with self._lock:
            state = self._containers.pop(cid, None)
            if died:
                self._died.add(cid)
            else:
                self._died.discard(cid)
        if state is None:
            return
        state.gone = True
        with state.lock:
            if state.snapshot is not None:
                state.snapshot.discard()
                state.snapshot = None
        shutil.rmtree(os.path.join(self.snapshot_dir, cid), ignore_errors=True)

    def _watch(self) -> None:
        """Events thread: drop snapshots of containers that die or are destroyed."""
        while not self._closing.is_set():
            try:
                self._events = self.client.events(
                    decode=True, filters={"type": "container", "event": ["die", "destroy"]}
                )
                for event in self._events:
                    cid = event.get("id") or (event.get("Actor") or {}).get("ID", "")
                    if _ID.fullmatch(str(cid)):
                        self.forget(cid, died=event.get("status", event.get("Action")) == "die")
            except Exception:  # the engine restarted or the stream broke: reconnect
                pass
            self._closing.wait(1.0)

    def _maybe_sweep(self) -> None:
        """Lazily drop snapshots of containers Docker no longer runs (missed events)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_sweep or not self._containers:
                return
            self._next_sweep = now + _SWEEP_EVERY_S
            known = list(self._containers)
        try:
            running = {c["Id"] for c in self.client.api.containers(quiet=True)}
        except Exception:
            return
        for cid in known:
            if cid not in running:
                self.forget(cid)

    def close(self) -> None:
        """Stop watching events and delete every snapshot."""
        self._closing.set()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        with self._lock:
            ids = list(self._containers)
        for cid in ids:
            self.forget(cid, died=False)
        with contextlib.suppress(Exception):
            self.client.close()


def merged_hint(exc: SnapshotError) -> str:
    """The host path of the merged dir named in an error message ("" when none)."""
    match = re.search(r"/\S*/merged", exc.message)
    return match.group(0) if match else ""


def _in_container(exc: SnapshotError, merged: str) -> DriverError:
    """The same error with the host path of the container's root hidden (the reply goes
    to the container): ``merged at 'tmp/x'`` becomes ``container:/ at 'tmp/x'``."""
    message = exc.message.replace(merged, "container:/") if merged else exc.message
    return DriverError(exc.op, message)


def _check_mounted(merged: str, op: str) -> None:
    """The merged dir must be the container's overlay mount, not the empty dir below it."""
    try:
        inner = os.stat(merged, follow_symlinks=False)
        outer = os.stat(os.path.dirname(merged.rstrip("/")), follow_symlinks=False)
    except OSError as exc:
        raise DriverError(op, f"the container's merged dir is unavailable: {exc}") from None
    if not stat.S_ISDIR(inner.st_mode) or inner.st_dev == outer.st_dev:
        raise DriverError(op, "the container's layer is not mounted (stopped container?)")


def _raise_fd_limit() -> None:
    """Walking deep trees of many containers at once needs descriptors: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
