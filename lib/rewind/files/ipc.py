"""The container's IPC namespace, reset after every request (sidecar process, root).

SysV message queues, shared memory and semaphores, and POSIX message queues outlive the
process that made them: a request that leaves a secret in one (under a fixed key or
name) hands it to the next. ``IpcNamespace.checkpoint`` records every object of this
process's IPC namespace (``/proc/sysvipc/*`` and the mqueue filesystem); ``reset`` removes
every object created since, and refuses (SnapshotError, so the launcher fails closed)
when an object that existed at the checkpoint changed or disappeared: its contents
cannot be put back, and keeping it would carry the change to the next request.

Removal needs the object's owner or CAP_SYS_ADMIN, which root in a Docker container
lacks, so each SysV call is made with this thread's effective uid switched to the owner's
(raw setresuid: one thread only, root's capabilities come back with euid 0).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rewind.files.model import SnapshotError

IPC_RMID = 0
GETPID = 11
GETALL = 13
#: /proc/self/ns/ipc of the initial (host) namespace: PROC_IPC_INIT_INO.
HOST_IPC_NS_INODE = 0xEFFFFFFF
_SYS_SETRESUID = {"x86_64": 117, "aarch64": 147, "arm64": 147}.get(platform.machine(), -1)
# Columns that change without anyone touching the object (memory reclaim).
_VOLATILE = frozenset({"rss", "swap"})
_KINDS = {"msg": "SysV message queue", "shm": "SysV shared memory", "sem": "SysV semaphore set"}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _mq_lib() -> Any:
    """The library with mq_open/mq_unlink: libc since glibc 2.34, librt before."""
    if hasattr(_libc, "mq_open"):
        return _libc
    return ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _as_uid(uid: int, call: Callable[[], int]) -> int:
    """Run ``call`` with this thread's effective uid set to ``uid`` (root only)."""
    if uid == os.geteuid() or _SYS_SETRESUID < 0:
        return call()
    _check(_libc.syscall(_SYS_SETRESUID, -1, uid, -1), f"setresuid(-1, {uid}, -1)")
    try:
        return call()
    finally:
        if _libc.syscall(_SYS_SETRESUID, -1, 0, -1) != 0:  # pragma: no cover - root can
            os._exit(70)  # never go on with another user's identity in a root daemon


def read_sysvipc(kind: str) -> dict[int, dict[str, int]]:
    """``/proc/sysvipc/<kind>`` as {id: {column: value}} (this process's IPC namespace).

    Read with one raw read per 64 KiB (a buffered text file costs several times more,
    and this runs after every request).
    """
    fd = os.open(f"/proc/sysvipc/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    rows: dict[int, dict[str, int]] = {}
    if len(lines) > 2 or (len(lines) == 2 and lines[1].strip()):
        header = lines[0].decode().split()
        for line in lines[1:]:
            values = [int(v) for v in line.split()]
            if values:
                rows[values[1]] = dict(zip(header, values, strict=False))
    return rows


def _getpid(semid: int, num: int) -> Callable[[], int]:
    return lambda: _check(_libc.semctl(semid, num, GETPID), "GETPID")


def _sem_values(semid: int, row: dict[str, int]) -> tuple[int, ...] | None:
    """Every semaphore's value and last pid, or None when even the owner cannot read."""
    nsems = row["nsems"]
    values = (ctypes.c_ushort * max(nsems, 1))()
    try:
        _as_uid(row["uid"], lambda: _check(_libc.semctl(semid, 0, GETALL, values), "GETALL"))
        pids = [_as_uid(row["uid"], _getpid(semid, n)) for n in range(nsems)]
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return None
        raise
    return (*values[:nsems], *pids)


def _rmid(kind: str, ident: int) -> int:
    if kind == "sem":
        return int(_libc.semctl(ident, 0, IPC_RMID))
    return int(getattr(_libc, f"{kind}ctl")(ident, IPC_RMID, None))  # msgctl, shmctl


def _remove(kind: str, ident: int, uid: int) -> None:
    try:
        _as_uid(uid, lambda: _check(_rmid(kind, ident), f"{kind}ctl({ident}, IPC_RMID)"))
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EIDRM):  # already gone
            raise


def _mq_state(dir_fd: int, name: str) -> tuple[Any, ...]:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.read(fd, 256)  # "QSIZE:n NOTIFY:n SIGNO:n NOTIFY_PID:n"
    finally:
        os.close(fd)
    return (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, info)


@dataclass
class IpcSnapshot:
    """What existed at the checkpoint."""

    sysv: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    mqueues: dict[str, tuple[Any, ...]] = field(default_factory=dict)


class IpcNamespace:
    """Checkpoint and reset of this process's IPC namespace."""

    def __init__(self, private_dir: str) -> None:
        self.private_dir = private_dir  # where to mount an mqueue fs when none is ours
        self.mqueue_dir: str | None = None
        self.snapshot: IpcSnapshot | None = None
        self.skipped = ""
        if os.stat("/proc/self/ns/ipc").st_ino == HOST_IPC_NS_INODE:
            # Outside any container or `rewind serve`: removing "new" objects would
            # remove other programs' objects of the host.
            self.skipped = "the sidecar runs in the host's IPC namespace"

    def _sysv_state(self, kind: str, ident: int, row: dict[str, int]) -> tuple[Any, ...]:
        fixed = tuple(v for k, v in row.items() if k not in _VOLATILE)
        if kind == "sem":
            return (*fixed, _sem_values(ident, row))
        return fixed

    def _find_mqueue(self) -> str:
        """A mount of this IPC namespace's mqueue fs: /dev/mqueue if it is ours, else our own.

        A mqueue mount shows the queues of the namespace it was mounted in, which need
        not be ours: a probe queue made here must appear in it.
        """
        candidates = []
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                pre, _, post = line.partition(" - ")
                if post.split()[:1] == ["mqueue"]:
                    candidates.append(pre.split()[4].replace("\\040", " "))
        lib = _mq_lib()
        lib.mq_open.restype = ctypes.c_int
        probe = f"rewind-probe-{os.getpid()}-{secrets.token_hex(4)}"
        mqd = _check(
            lib.mq_open(f"/{probe}".encode(), os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o600, None),
            "mq_open(probe)",
        )
        try:
            for path in candidates:
                if os.path.exists(os.path.join(path, probe)):
                    return path
            own = os.path.join(self.private_dir, "mqueue")
            os.makedirs(own, mode=0o700, exist_ok=True)
            try:
                ret = _libc.mount(b"mqueue", own.encode(), b"mqueue", ctypes.c_ulong(0), None)
                _check(ret, "mount mqueue")
            except OSError as exc:
                raise SnapshotError(
                    "checkpoint",
                    f"no mqueue filesystem of this IPC namespace is mounted and none can be "
                    f"({exc}): POSIX message queues could not be reset",
                ) from None
            return own
        finally:
            _check(lib.mq_close(mqd), "mq_close")
            _check(lib.mq_unlink(f"/{probe}".encode()), "mq_unlink(probe)")

    def _mq_names(self) -> tuple[int, list[str]]:
        assert self.mqueue_dir is not None
        fd = os.open(self.mqueue_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return fd, os.listdir(fd)

    def checkpoint(self) -> dict[str, Any]:
        """Record every object; the counts go into the checkpoint's metrics."""
        if self.skipped:
            return {"ipc": f"not reset: {self.skipped}"}
        snap = IpcSnapshot()
        try:
            for kind in _KINDS:
                snap.sysv[kind] = {
                    ident: self._sysv_state(kind, ident, row)
                    for ident, row in read_sysvipc(kind).items()
                }
            if self.mqueue_dir is None:
                self.mqueue_dir = self._find_mqueue()
            fd, names = self._mq_names()
            try:
                snap.mqueues = {name: _mq_state(fd, name) for name in names}
            finally:
                os.close(fd)
        except OSError as exc:
            raise SnapshotError("checkpoint", f"IPC namespace: {exc}") from exc
        self.snapshot = snap
        return {"ipc_objects": sum(map(len, snap.sysv.values())) + len(snap.mqueues)}

    def reset(self) -> dict[str, Any]:
        """Remove what is new; SnapshotError when a checkpointed object changed."""
        if self.skipped or self.snapshot is None:
            return {}
        removed = 0
        try:
            for kind, label in _KINDS.items():
                old = self.snapshot.sysv[kind]
                live = read_sysvipc(kind)
                for ident, row in live.items():
                    if ident not in old:
                        _remove(kind, ident, row["uid"])
                        removed += 1
                    elif self._sysv_state(kind, ident, row) != old[ident]:
                        raise SnapshotError(
                            "rewind",
                            f"{label} key {row['key']:#x} (id {ident}) existed at the "
                            "checkpoint and a request changed it; its contents cannot be "
                            "put back",
                        )
                for ident in old.keys() - live.keys():
                    raise SnapshotError(
                        "rewind", f"{label} id {ident} existed at the checkpoint and was removed"
                    )
            fd, names = self._mq_names()
            try:
                for name in names:
                    if name not in self.snapshot.mqueues:
                        os.unlink(name, dir_fd=fd)
                        removed += 1
                    elif _mq_state(fd, name) != self.snapshot.mqueues[name]:
                        raise SnapshotError(
                            "rewind",
                            f"POSIX message queue /{name} existed at the checkpoint and a "
                            "request changed it; its messages cannot be put back",
                        )
                for name in self.snapshot.mqueues.keys() - set(names):
                    raise SnapshotError(
                        "rewind",
                        f"POSIX message queue /{name} existed at the checkpoint and was removed",
                    )
            finally:
                os.close(fd)
        except OSError as exc:
            raise SnapshotError("rewind", f"IPC namespace: {exc}") from exc
        return {"ipc_removed": removed}
