"""Every place the function user can write, found at run time (sidecar process, root).

Walks every writable mount of this mount namespace (``/proc/self/mountinfo``) in a forked
child that takes the function user's effective uid, gid and groups, so the kernel's own
permission check (``faccessat(AT_EACCESS)``: mode bits, ACLs, read-only mounts) decides.
The child keeps root as its real and saved uid only to list directories the user may
traverse but not read (names it could still guess). A directory counts when the user can
create entries in it or owns it (an owner can chmod it writable); so does a regular file
outside such directories. The walk does not enter a writable directory: the local driver
rewinds it whole. Pseudo filesystems (``/proc``, ``/sys``, cgroups, devpts, mqueue, which
the IPC reset covers) and device nodes are skipped: writing ``/dev/null`` is not state.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: Filesystems whose files are not storage a request could leave data in (or, for
#: mqueue, are reset by the IPC namespace reset instead).
PSEUDO_FS = frozenset(
    {
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
        "tracefs", "bpf", "configfs", "fusectl", "pstore", "binfmt_misc", "autofs", "nsfs",
        "efivarfs", "selinuxfs", "rpc_pipefs",
    }
)  # fmt: skip
SKIPPED_TREES = ("/proc", "/sys")
#: Who the walk runs as when the function runs as root: root writes everywhere, so the
#: places every user can write (the overflow uid, no groups) are rewound.
NOBODY = 65534


@dataclass(frozen=True)
class WritableSet:
    """Directories and single files the user can change; ``ms`` is the walk's cost."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]
    ms: float
    uid: int


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def writable_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of read-write mounts of storage filesystems, outside /proc and /sys."""
    points: list[str] = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            fields, sfields = pre.split(), post.split()
            point = _unescape(fields[4])
            if "rw" not in fields[5].split(",") or len(sfields) < 3:
                continue
            if sfields[0] in PSEUDO_FS or "ro" in sfields[2].split(","):
                continue
            if any(point == t or point.startswith(t + "/") for t in SKIPPED_TREES):
                continue
            points.append(point)
    return sorted(set(points))


def resolve_user(user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) of the function user; root becomes the overflow user."""
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return NOBODY, NOBODY, []
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


class _Walker:
    """Runs in the forked child with the user's effective ids."""

    def __init__(self, uid: int, skip: tuple[str, ...]) -> None:
        self.uid = uid
        self.skip = skip
        self.dirs: list[str] = []
        self.files: list[str] = []

    def can_write(self, path: str, st: os.stat_result) -> bool:
        return st.st_uid == self.uid or os.access(
            path, os.W_OK | os.X_OK, effective_ids=True, follow_symlinks=False
        )

    def listing(self, path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return list(it)
        except PermissionError:
            pass
        # Traversable but not readable: the user can still open names it knows.
        os.seteuid(0)
        try:
            with os.scandir(path) as it:
                return list(it)
        finally:
            os.seteuid(self.uid)

    def walk_mount(self, point: str) -> None:
        try:
            top = os.stat(point, follow_symlinks=False)
        except OSError:
            return  # not reachable for the user
        if stat.S_ISREG(top.st_mode):  # a bind-mounted file
            if self.can_write(point, top):
                self.files.append(point)
            return
        if not stat.S_ISDIR(top.st_mode):
            return
        stack = [point]
        while stack:
            path = stack.pop()
            if _under(path, self.skip):
                continue
            try:
                st = os.stat(path, follow_symlinks=False)
                if self.can_write(path, st):
                    self.dirs.append(path)
                    continue
                if not os.access(path, os.X_OK, effective_ids=True):
                    continue
                entries = self.listing(path)
            except OSError:
                continue
            for de in entries:
                child = os.path.join(path, de.name)
                try:
                    est = de.stat(follow_symlinks=False)
                except OSError:
                    continue
                if est.st_dev != top.st_dev:
                    continue  # another mount: walked on its own
                if stat.S_ISDIR(est.st_mode):
                    stack.append(child)
                # Only a group/other write bit (or an ACL, whose mask shows as the group
                # bits) or ownership can give the user write access to a file.
                elif (
                    stat.S_ISREG(est.st_mode)
                    and (est.st_uid == self.uid or est.st_mode & 0o022)
                    and self.can_write(child, est)
                ):
                    self.files.append(child)


def find_writable(user: str, skip: Iterable[str] = ()) -> WritableSet:
    """Walk as ``user`` (a name or uid) in a forked child; root is walked as nobody.

    ``skip`` lists trees never entered (the sidecar's snapshot dir). Runs as root.
    """
    uid, gid, groups = resolve_user(user)
    skip_t = tuple(skip)
    start = time.perf_counter()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setegid(gid)
            os.seteuid(uid)
            walker = _Walker(uid, skip_t)
            for point in writable_mounts():
                walker.walk_mount(point)
            data = json.dumps({"dirs": walker.dirs, "files": walker.files}).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(f"the walk as uid {uid} failed (status {status})")
    found = json.loads(b"".join(chunks))
    ms = (time.perf_counter() - start) * 1000
    dirs = tuple(sorted(set(found["dirs"])))
    files = tuple(sorted(f for f in set(found["files"]) if not _under(f, dirs)))
    return WritableSet(dirs=dirs, files=files, ms=ms, uid=uid)
