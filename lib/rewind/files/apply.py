"""The apply: the only code that mutates a tree, making it match a snapshot again.

Runs inside the sidecar, for either driver, with ``diff``'s changes. Added paths are removed
first (they free the space restored copies need), then recorded ones rebuilt. Every call is
relative to a directory fd opened with ``O_NOFOLLOW``; files are restored as a new file and
``rename``, never written through an existing inode.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable

from rewind.files.model import (
    Change,
    ChangeKind,
    Entry,
    Metrics,
    Snapshot,
    SnapshotError,
    split_path,
)
from rewind.files.store import copy_fd
from rewind.files.walk import DIR_FLAGS, READ_FLAGS, open_root

_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_CACHE = 64


class _Applier:
    """State of one ``apply``: a small cache of safely opened directory fds."""

    def __init__(self, snapshot: Snapshot, root_fd: int) -> None:
        self.snap = snapshot
        self.root_fd = root_fd
        self.dirs: dict[str, int] = {}
        self.metrics = Metrics()
        self.touched: set[str] = set()  # paths whose recorded stat must be refreshed
        self.dir_times: set[str] = set()  # directories whose times must be reset last
        self.sockets: list[str] = []
        self.tmp_seq = 0

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def dir_fd(self, path: str) -> int:
        """Open ``path`` component by component with O_NOFOLLOW, from the nearest cached one."""
        if not path:
            return self.root_fd
        fd = self.dirs.get(path)
        if fd is not None:
            return fd
        parts = path.split("/")
        i = len(parts) - 1
        base = self.root_fd
        lowest = max(0, i - _DIR_CACHE)  # bounded search: a deep miss must not cost O(depth²)
        while i > lowest:
            cached = self.dirs.get("/".join(parts[:i]))
            if cached is not None:
                base = cached
                break
            i -= 1
        else:
            i = 0
        for j in range(i, len(parts)):
            fd = os.open(parts[j], DIR_FLAGS, dir_fd=base)
            if len(self.dirs) >= _DIR_CACHE:
                old = next(iter(self.dirs))
                os.close(self.dirs.pop(old))
            self.dirs["/".join(parts[: j + 1])] = fd
            base = fd
        return base

    def forget(self, path: str) -> None:
        """Drop cached fds at or below a path that is about to be removed or replaced."""
        prefix = path + "/"
        for p in [p for p in self.dirs if p == path or p.startswith(prefix)]:
            os.close(self.dirs.pop(p))

    def run(self, change: Change) -> None:
        parent, name = split_path(change.path)
        self.dir_times.add(parent)
        self.touched.add(parent)
        if not change.path:  # the root itself: metadata only
            assert change.entry is not None
            self.set_meta_dir(self.root_fd, change.entry)
            return
        pfd = self.dir_fd(parent)
        if change.kind is ChangeKind.ADD:
            self.forget(change.path)
            self.metrics.removed += remove_tree(pfd, name)
            return
        entry = change.entry
        assert entry is not None
        if change.kind is ChangeKind.MODIFY and not change.recreate:
            self.set_meta(pfd, name, entry)
        else:
            self.recreate(pfd, name, entry, exists=change.kind is ChangeKind.MODIFY)
        self.metrics.restored += 1
        if entry.path in self.snap.entries:
            self.touched.add(entry.path)
            if entry.is_dir:
                self.dir_times.add(entry.path)

    def recreate(self, pfd: int, name: str, entry: Entry, *, exists: bool) -> None:
        mode = entry.st_mode
        if exists:
            # Remove what is there first: on a full file system the fresh copy of a file
            # that grew only fits once the grown one is gone. No process of the request is
            # alive during a rewind, so nobody sees the name missing. A file replacing a
            # file counts as restored, not removed.
            self.forget(entry.path)
            same_kind = stat.S_ISREG(mode) and self._is_file(pfd, name)
            removed = remove_tree(pfd, name)
            self.metrics.removed += 0 if same_kind else removed
        if stat.S_ISREG(mode):
            self.restore_file(pfd, name, entry)
        elif stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=pfd)
            self.set_meta_dir_at(pfd, name, entry)
        elif stat.S_ISLNK(mode):
            assert entry.target is not None
            os.symlink(entry.target, name, dir_fd=pfd)
            os.chown(name, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
            self._utime(pfd, name, entry)
        elif stat.S_ISSOCK(mode):
            # A socket is only meaningful with its listening process; it cannot be restored.
            self.sockets.append(entry.path)
        else:  # FIFO, character or block device
            os.mknod(name, stat.S_IFMT(mode) | 0o600, entry.rdev, dir_fd=pfd)
            os.chown(name, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
            self._chmod_special(pfd, name, entry)
            self._utime(pfd, name, entry)

    @staticmethod
    def _is_file(pfd: int, name: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def restore_file(self, pfd: int, name: str, entry: Entry) -> None:
        """Write a new file beside the target and rename it into place: never write in
        place, so a hard link planted to an outside file is replaced, not written through."""
        assert entry.blob is not None
        self.tmp_seq += 1
        tmp = f".rewind-{os.getpid()}-{self.tmp_seq}.tmp"
        fd = os.open(tmp, _NEW_FLAGS, 0o600, dir_fd=pfd)
        try:
            try:
                blob = self.snap.store.open(entry.blob)
                try:
                    self.metrics.bytes_copied += copy_fd(blob, fd, entry.size)
                finally:
                    os.close(blob)
                os.fchown(fd, entry.uid, entry.gid)
                os.fchmod(fd, stat.S_IMODE(entry.st_mode))  # after chown, which clears setuid
                os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=pfd)
            except OSError:
                pass
            raise

    def set_meta(self, pfd: int, name: str, entry: Entry) -> None:
        mode = entry.st_mode
        if stat.S_ISDIR(mode):
            self.set_meta_dir_at(pfd, name, entry)
        elif stat.S_ISREG(mode):
            fd = os.open(name, READ_FLAGS, dir_fd=pfd)
            try:
                if os.fstat(fd).st_ino != entry.ino:
                    raise OSError(errno.EAGAIN, f"{entry.path!r} replaced during rewind")
                os.fchown(fd, entry.uid, entry.gid)
                os.fchmod(fd, stat.S_IMODE(mode))
                os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
        else:  # symlink with the same inode: owner and times only
            os.chown(name, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
            self._utime(pfd, name, entry)

    def set_meta_dir_at(self, pfd: int, name: str, entry: Entry) -> None:
        fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
        try:
            self.set_meta_dir(fd, entry)
        finally:
            os.close(fd)

    @staticmethod
    def set_meta_dir(fd: int, entry: Entry) -> None:
        os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, stat.S_IMODE(entry.st_mode))  # times are reset last, see finish()

    @staticmethod
    def _utime(pfd: int, name: str, entry: Entry) -> None:
        os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _chmod_special(pfd: int, name: str, entry: Entry) -> None:
        # fchmodat cannot refuse to follow a link on Linux; chmod the exact inode through
        # an O_PATH fd instead, after checking that it is the node we just made.
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != stat.S_IFMT(entry.st_mode):
                raise OSError(errno.EAGAIN, f"{entry.path!r} replaced during rewind")
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(entry.st_mode))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Reset directory times deepest first (children change them), then refresh the
        snapshot's record of every touched path: restoring makes new inodes and ctimes."""
        for path in sorted(self.dir_times, key=lambda p: p.count("/") + bool(p), reverse=True):
            entry = self.snap.entries.get(path)
            if entry is None or not entry.is_dir:
                continue
            if path:
                parent, name = split_path(path)
                self._utime(self.dir_fd(parent), name, entry)
            else:
                os.utime(self.root_fd, ns=(entry.atime_ns, entry.mtime_ns))
        for path in self.sockets:
            self.snap.forget(path)
            self.touched.discard(path)
        for path in sorted(self.touched, key=lambda p: p.split("/")):  # parents first: cache hits
            entry = self.snap.entries.get(path)
            if entry is None:
                continue
            if path:
                parent, name = split_path(path)
                st = os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)
            else:
                st = os.fstat(self.root_fd)
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(entry.st_mode):
                # Replaced by a concurrent writer since it was restored: keep the old
                # record, so the next diff sees the change (a link must never be
                # recorded as a link without a target).
                continue
            self.snap.record(entry.refreshed(st))


def remove_tree(dir_fd: int, name: str) -> int:
    """Remove ``name`` under ``dir_fd`` and, if it is a directory, everything below it.

    Iterative and symlink-safe: directories are entered with O_NOFOLLOW relative to their
    parent fd, links are unlinked, never followed. Returns the number of entries removed.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return 1
    removed = 0
    stack = [(os.open(name, DIR_FLAGS, dir_fd=dir_fd), dir_fd, name)]
    try:
        while stack:
            fd = stack[-1][0]
            descended = False
            with os.scandir(fd) as it:
                for de in it:
                    if de.is_dir(follow_symlinks=False):
                        stack.append((os.open(de.name, DIR_FLAGS, dir_fd=fd), fd, de.name))
                        descended = True
                        break
                    os.unlink(de.name, dir_fd=fd)
                    removed += 1
            if not descended:
                fd, pfd, dname = stack.pop()
                os.close(fd)
                os.rmdir(dname, dir_fd=pfd)
                removed += 1
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return removed


def apply(snapshot: Snapshot, root: str, changes: Iterable[Change]) -> Metrics:
    """Make the tree under ``root`` match ``snapshot`` again, given ``diff``'s changes.

    The only code that mutates a tree. Added paths are removed (recursively, without
    following links); modified and deleted ones are rebuilt from the snapshot. Afterwards
    the snapshot's record of every restored path is refreshed (new inode and ctime), so an
    untouched tree diffs empty next time. Raises SnapshotError.
    """
    start = time.perf_counter()
    root_fd = open_root(root, "apply")
    applier = _Applier(snapshot, root_fd)
    current = ""
    # Removals first: they free the space that restored copies need.
    ordered = sorted(changes, key=lambda c: c.kind is not ChangeKind.ADD)
    try:
        for change in ordered:
            current = change.path
            applier.run(change)
        current = ""
        applier.finish()
    except OSError as exc:
        where = f" at {current!r}" if current else ""
        raise SnapshotError("apply", f"{root}{where}: {exc}") from exc
    finally:
        applier.close()
        os.close(root_fd)
    metrics = applier.metrics
    metrics.ms = (time.perf_counter() - start) * 1000
    return metrics
