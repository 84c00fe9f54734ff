"""The sidecar's ``local`` driver: protects every writable place inside the container.

Runs in the sidecar process (root, in the action container). ``checkpoint`` finds every
place the function user can write (``writable``), adds the configured roots, captures them
all into a root-only snapshot directory outside those roots, and records the IPC namespace
(``ipc``); ``rewind`` brings each root back and resets the IPC namespace. Configuration
comes from an injected environment, validated once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pwd
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rewind import settings
from rewind.files.ipc import IpcNamespace
from rewind.files.model import Metrics, Snapshot, SnapshotError
from rewind.files.snapshot import capture, rewind
from rewind.files.store import Store, copy_fd
from rewind.files.writable import WritableSet, find_writable

DEFAULT_SNAPSHOT_DIR = settings.SNAPSHOT_DIR.default


class DriverError(SnapshotError):
    """A driver-level failure (bad configuration, rewind before checkpoint)."""


def _home_of(user: str) -> str:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise DriverError("config", f"REWIND_USER={user!r}: no such user") from None
    return "" if entry.pw_uid == 0 else entry.pw_dir


@dataclass(frozen=True)
class LocalConfig:
    """The protected roots and where their snapshots live.

    ``paths`` are always rewound. With ``derive`` (the default; off only for ``--paths``
    on the command line, which tests and tools use on a shared machine) every place
    ``user`` can write is found at the checkpoint and rewound too, and the IPC namespace
    is reset after every request.
    """

    paths: tuple[str, ...]
    snapshot_dir: str = DEFAULT_SNAPSHOT_DIR
    user: str = "0"
    derive: bool = True

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        paths: str | None = None,
        snapshot_dir: str | None = None,
    ) -> LocalConfig:
        """Read REWIND_PATHS / REWIND_ACTION_DIR / REWIND_USER / REWIND_SNAPSHOT_DIR;
        explicit arguments (the command-line options) win over the environment."""
        user = environ.get(settings.USER.name, "").strip() or "0"
        if user != "0":
            _home_of(user)  # a clear error for an unknown user, at start
        raw = paths if paths is not None else environ.get(settings.PATHS.name, "")
        if raw.strip():
            chosen = [p for p in raw.split(":") if p]
        else:
            chosen = ["/tmp"]
            if environ.get(settings.ACTION_DIR.name):
                chosen.append(environ[settings.ACTION_DIR.name])
            home = _home_of(user) if user != "0" else ""
            if home:
                chosen.append(home)
        snap = snapshot_dir or environ.get(settings.SNAPSHOT_DIR.name) or DEFAULT_SNAPSHOT_DIR
        return cls(
            paths=tuple(dict.fromkeys(chosen)),
            snapshot_dir=snap,
            user=user,
            derive=paths is None,
        )

    def validate(self) -> None:
        """Refuse configurations that could destroy the system or the snapshots."""
        if not os.path.isabs(self.snapshot_dir):
            raise DriverError("config", f"snapshot dir {self.snapshot_dir!r} is not absolute")
        check_roots(self.paths, self.snapshot_dir, "config")


def check_roots(paths: Iterable[str], snapshot_dir: str, op: str) -> None:
    """Refuse roots that are /, hold the snapshot dir (on the same filesystem: the walk
    stops at mount points) or lie inside it."""
    snap = os.path.realpath(snapshot_dir)
    for path in paths:
        if not os.path.isabs(path):
            raise DriverError(op, f"protected path {path!r} is not absolute")
        real = os.path.realpath(path)
        if real == "/":
            raise DriverError(op, f"refusing to protect {path!r}: it is the root /")
        if (snap == real or snap.startswith(real.rstrip("/") + "/")) and _same_fs(real, snap):
            raise DriverError(
                op, f"refusing to protect {path!r}: it contains the snapshot dir {snap!r}"
            )
        if real.startswith(snap + "/"):
            raise DriverError(op, f"protected path {path!r} is inside the snapshot dir")
        if not os.path.isdir(real):
            raise DriverError(op, f"protected path {path!r} is not a directory")


def _same_fs(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except FileNotFoundError:
        return True  # not made yet: it will be on the root's filesystem


def outermost(paths: Iterable[str]) -> list[str]:
    """Drop roots inside another root of the same filesystem: rewinding both would make
    each restore what the other just refreshed."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}):
        if not any(path.startswith(k.rstrip("/") + "/") and _same_fs(k, path) for k in kept):
            kept.append(path)
    return kept


class FileRoot:
    """One writable file in a directory the user cannot write (its name cannot change).

    Restored in place (it may be a mount point, so never renamed over): content, size,
    owner, mode and times. A different inode at that name means root replaced it: the
    rewind fails rather than guess.
    """

    def __init__(self, path: str, store_dir: str) -> None:
        self.path = path
        self.store = Store(store_dir)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.st = os.fstat(fd)
            if not stat.S_ISREG(self.st.st_mode):
                raise DriverError("checkpoint", f"{path!r} is not a regular file")
            self.blob, _ = self.store.put(fd, self.st.st_size)
        finally:
            os.close(fd)

    @staticmethod
    def _sig(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_mtime_ns,
                st.st_ctime_ns)  # fmt: skip

    def rewind(self) -> Metrics:
        m = Metrics(scanned=1)
        if self._sig(os.stat(self.path, follow_symlinks=False)) == self._sig(self.st):
            return m
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_ino != self.st.st_ino or not stat.S_ISREG(st.st_mode):
                raise DriverError("rewind", f"{self.path!r} was replaced since the checkpoint")
            os.ftruncate(fd, 0)  # copy_fd writes only data segments: start from a hole
            blob = self.store.open(self.blob)
            try:
                m.bytes_copied = copy_fd(blob, fd, self.st.st_size)
            finally:
                os.close(blob)
            os.fchown(fd, self.st.st_uid, self.st.st_gid)
            os.fchmod(fd, stat.S_IMODE(self.st.st_mode))
            os.utime(fd, ns=(self.st.st_atime_ns, self.st.st_mtime_ns))
            self.st = os.fstat(fd)  # new ctime: the record follows
        finally:
            os.close(fd)
        m.restored = 1
        return m

    def discard(self) -> None:
        self.store.discard()


class LocalDriver:
    """Checkpoint and rewind of the configured roots; the server serializes calls."""

    def __init__(self, config: LocalConfig) -> None:
        config.validate()
        self.config = config
        # Resolve once: a root swapped for a symlink later must not redirect us.
        self.roots = [os.path.realpath(p) for p in config.paths]
        self.file_roots: list[FileRoot] = []
        os.makedirs(config.snapshot_dir, mode=0o700, exist_ok=True)
        os.chmod(config.snapshot_dir, 0o700)
        self.workdir = os.path.join(config.snapshot_dir, f"local-{os.getpid()}")
        _unmount_below(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.mkdir(self.workdir, 0o700)
        self.ipc = IpcNamespace(self.workdir) if config.derive else None
        self.walk = _Walk(config) if config.derive else None
        self.snapshots: list[Snapshot] | None = None
        self.generation = 0
        self.counts = {"checkpoints": 0, "rewinds": 0, "errors": 0}
        self.last: dict[str, Any] = {}

    def checkpoint(self, peer: object = None) -> dict[str, Any]:
        """Capture every root; only once per sidecar.

        The function runs as the same user as the launcher, so it could reach the
        sidecar's socket; refusing a second checkpoint keeps it from making its own
        changes the baseline. A restarted launcher rewinds to the existing one.
        """
        if self.snapshots is not None:
            self.counts["errors"] += 1
            raise DriverError("checkpoint", "a checkpoint exists already and is kept")
        start = time.perf_counter()
        self.generation += 1
        taken: list[Snapshot] = []
        files: list[FileRoot] = []
        found: dict[str, Any] = {}
        try:
            if self.config.derive:
                found = self._derive()
            for i, root in enumerate(self.roots):
                store = os.path.join(self.workdir, f"{self.generation}-{i}")
                taken.append(capture(root, store))
            for i, path in enumerate(found.pop("file_roots", [])):
                files.append(FileRoot(path, os.path.join(self.workdir, f"{self.generation}-f{i}")))
            ipc = self.ipc.checkpoint() if self.ipc is not None else {}
        except (SnapshotError, OSError) as exc:
            _discard(taken, files)
            self.counts["errors"] += 1
            if isinstance(exc, SnapshotError):
                raise
            raise DriverError("checkpoint", str(exc)) from exc
        old, self.snapshots = self.snapshots, taken
        _discard(old or [], [])
        self.file_roots = files
        self.counts["checkpoints"] += 1
        entries = sum(len(s.entries) for s in taken) + len(files)
        self.last = {"entries": entries, "ms": (time.perf_counter() - start) * 1000}
        return dict(self.last, roots=len(taken) + len(files), **found, **ipc)

    def _derive(self) -> dict[str, Any]:
        """Add every place the function user can write to the roots (once, at the checkpoint)."""
        assert self.walk is not None
        waited = time.perf_counter()
        found = self.walk.result()
        waited = (time.perf_counter() - waited) * 1000
        self.roots = outermost([*self.roots, *found.dirs])
        check_roots(self.roots, self.config.snapshot_dir, "checkpoint")
        files = [f for f in found.files if not any(f.startswith(r + "/") for r in self.roots)]
        return {
            "walk_ms": round(found.ms, 1),  # the walk, mostly hidden behind the import
            "walk_wait_ms": round(waited, 1),  # what it added to the checkpoint
            # One string, so the sidecar's debug log prints the derived set.
            "writable": ":".join([*found.dirs, *files]),
            "file_roots": files,
        }

    def rewind(self, peer: object = None) -> dict[str, Any]:
        """Restore every root to the checkpoint; errors leave the checkpoint in place."""
        if self.snapshots is None:
            self.counts["errors"] += 1
            raise DriverError("rewind", "no checkpoint has been taken yet")
        start = time.perf_counter()
        total = Metrics()
        ipc: dict[str, Any] = {}
        try:
            for m in (
                *(rewind(snap, snap.root) for snap in self.snapshots),
                *(f.rewind() for f in self.file_roots),
            ):
                total.scanned += m.scanned
                total.removed += m.removed
                total.restored += m.restored
                total.bytes_copied += m.bytes_copied
            if self.ipc is not None:
                ipc = self.ipc.reset()
        except OSError as exc:
            self.counts["errors"] += 1
            raise DriverError("rewind", str(exc)) from exc
        except SnapshotError:
            self.counts["errors"] += 1
            raise
        total.ms = (time.perf_counter() - start) * 1000
        self.counts["rewinds"] += 1
        self.last = dict(total.as_dict(), **ipc)
        return self.last

    def status(self, peer: object = None) -> dict[str, Any]:
        """Whether a checkpoint exists, the counts, the roots and the last metrics."""
        return {
            "driver": "local",
            "checkpointed": self.snapshots is not None,
            "roots": self.roots,
            "file_roots": [f.path for f in self.file_roots],
            "ipc": "not reset" if self.ipc is None else (self.ipc.skipped or "reset"),
            **self.counts,
            "last": self.last,
        }

    def close(self) -> None:
        """Delete this process's snapshots."""
        _discard(self.snapshots or [], self.file_roots)
        self.snapshots = None
        self.file_roots = []
        _unmount_below(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


class _Walk:
    """The writable walk, started with the sidecar (at /init, once the action dir is the
    user's) so that it overlaps the action's import, and joined at the checkpoint.

    The set cannot grow in between: creating or re-permissioning anything needs a
    writable directory or ownership, and both are already in it.
    """

    def __init__(self, config: LocalConfig) -> None:
        self.found: WritableSet | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()

    def _run(self, config: LocalConfig) -> None:
        try:
            self.found = find_writable(config.user, skip=[config.snapshot_dir])
        except BaseException as exc:  # re-raised in the checkpoint, which fails closed
            self.error = exc

    def result(self) -> WritableSet:
        self.thread.join()
        if self.error is not None:
            raise DriverError("checkpoint", f"finding the writable places: {self.error}")
        assert self.found is not None
        return self.found


def _discard(snapshots: list[Snapshot], files: list[FileRoot]) -> None:
    for snap in snapshots:
        snap.discard()
    for root in files:
        root.discard()


def _unmount_below(path: str) -> None:
    """Detach the private mqueue mount the IPC reset may have made in ``path``."""
    target = os.path.join(path, "mqueue")
    if os.path.ismount(target):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.umount2(target.encode(), 2) != 0:  # MNT_DETACH
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"umount {target}: {os.strerror(err)}")
