"""File-tree snapshots: ``capture``, a pure ``diff`` and ``apply`` (the only code that mutates).

Runs inside the sidecar process, for either driver. Paths are relative ``str`` decoded with
surrogateescape (what ``os.scandir`` on a directory fd yields), so every byte name round-trips.
Every call goes through a directory fd opened with ``O_NOFOLLOW``: no symlink is followed,
not even in a parent component. Walks are iterative, so tree depth is bounded only by fds.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace

from rewind.files.store import Store, copy_fd, same_content

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO be swapped in between stat and open, open() must not hang.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_CACHE = 64


class SnapshotError(Exception):
    """Base error of the files component: which operation failed, and why."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op
        self.message = message


class ChangeKind(enum.Enum):
    """What happened to a path since the capture (continuity's fs/diff.go vocabulary)."""

    ADD = "add"
    MODIFY = "modify"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Entry:
    """One captured path. ``sig`` is what ``diff`` compares (never mtime alone)."""

    path: str
    st_mode: int  # type bits and permission bits, as from lstat
    uid: int
    gid: int
    size: int
    ino: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    target: str | None = None  # symlink target
    rdev: int = 0  # device numbers of a block/char device
    blob: str | None = None  # store key of a regular file's content

    sig: tuple[int, int, int, int, int, int, int] = field(init=False, repr=False, compare=False)
    is_dir: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # (mode, uid, gid, size, ino, mtime_ns, ctime_ns): the change-detection key,
        # precomputed because diff compares it once per entry on the hot path.
        sig = (self.st_mode, self.uid, self.gid, self.size, self.ino, self.mtime_ns, self.ctime_ns)
        object.__setattr__(self, "sig", sig)
        object.__setattr__(self, "is_dir", stat.S_ISDIR(self.st_mode))


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a snapshot and the live tree.

    ``entry`` is the snapshot's record (None for ADD). ``recreate`` says the path must be
    rebuilt from the snapshot (new inode); when False only owner, mode and times differ.
    """

    kind: ChangeKind
    path: str
    entry: Entry | None = None
    recreate: bool = False


@dataclass(slots=True)
class Metrics:
    """What one rewind (or capture) did."""

    scanned: int = 0
    removed: int = 0
    restored: int = 0
    bytes_copied: int = 0
    ms: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        """JSON-ready form, as sent by the sidecar."""
        return asdict(self)


def _sig(st: os.stat_result) -> tuple[int, int, int, int, int, int, int]:
    return (
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_ino,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


class Snapshot:
    """The recorded tree of one root plus the store holding its file contents.

    ``entries`` maps relative path ("" is the root) to its Entry; ``children`` indexes
    names per directory so ``diff`` merges sorted listings without re-sorting.
    """

    def __init__(self, root: str, store: Store) -> None:
        self.root = root
        self.store = store
        self.entries: dict[str, Entry] = {}
        self.children: dict[str, dict[str, Entry]] = {}
        self._sorted: dict[str, list[str]] = {}

    def _set(self, entry: Entry) -> None:
        self.entries[entry.path] = entry
        if entry.path:
            parent, name = _split(entry.path)
            kids = self.children.setdefault(parent, {})
            if name not in kids:
                self._sorted.pop(parent, None)
            kids[name] = entry
        if entry.is_dir:
            self.children.setdefault(entry.path, {})

    def _drop(self, path: str) -> None:
        """Forget a path that cannot be restored (a socket) so diffs stay quiet."""
        self.entries.pop(path, None)
        parent, name = _split(path)
        self.children.get(parent, {}).pop(name, None)
        self._sorted.pop(parent, None)

    def sorted_names(self, path: str) -> list[str]:
        """Child names of a recorded directory, sorted (cached)."""
        names = self._sorted.get(path)
        if names is None:
            names = self._sorted[path] = sorted(self.children.get(path, {}))
        return names

    def subtree(self, path: str) -> Iterator[Entry]:
        """The entry at ``path`` and all recorded descendants, in path order (iterative)."""
        stack = [path]
        while stack:
            p = stack.pop()
            entry = self.entries[p]
            yield entry
            if entry.is_dir:
                stack.extend(_join(p, n) for n in reversed(self.sorted_names(p)))

    def discard(self) -> None:
        """Delete the stored contents; the snapshot is unusable afterwards."""
        self.store.discard()


def _open_root(root: str, op: str) -> int:
    try:
        return os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise SnapshotError(op, f"cannot open root {root!r} as a directory: {exc}") from exc


def _entry(path: str, st: os.stat_result) -> Entry:
    return Entry(
        path=path,
        st_mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        ino=st.st_ino,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        rdev=st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
    )


class _Frame:
    """An open directory fd, closed once every subdirectory below it has been opened.

    Holding only ancestors with pending subdirectories keeps a deep chain at O(1) fds.
    """

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0


def _close_frames(frames: set[_Frame]) -> None:
    for frame in frames:
        os.close(frame.fd)
    frames.clear()


def _enter(parent: _Frame, name: str, frames: set[_Frame]) -> _Frame:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
    frame = _Frame(fd)
    frames.add(frame)
    parent.pending -= 1
    if parent.pending == 0:
        frames.discard(parent)
        os.close(parent.fd)
    return frame


def _leave_if_done(frame: _Frame, frames: set[_Frame]) -> None:
    if frame.pending == 0:
        frames.discard(frame)
        os.close(frame.fd)


def capture(root: str, store_dir: str) -> Snapshot:
    """Record the tree under ``root``; contents of regular files go to a store in ``store_dir``.

    Runs in the sidecar. ``store_dir`` must lie outside ``root``. Raises SnapshotError.
    """
    root_fd = _open_root(root, "capture")
    snap = Snapshot(root, Store(store_dir))
    frames = {_Frame(root_fd)}
    top = next(iter(frames))
    try:
        root_st = os.fstat(root_fd)
        snap._set(_entry("", root_st))
        stack: list[tuple[_Frame | None, str, str]] = [(None, "", "")]
        while stack:
            parent, name, path = stack.pop()
            frame = top if parent is None else _enter(parent, name, frames)
            subdirs: list[tuple[_Frame | None, str, str]] = []
            with os.scandir(frame.fd) as it:
                for de in it:
                    if _foreign_mount(de, root_st.st_dev):
                        continue
                    child = _join(path, de.name)
                    st = de.stat(follow_symlinks=False)
                    snap._set(_capture_one(snap.store, frame.fd, de.name, child, st))
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append((frame, de.name, child))
            frame.pending = len(subdirs)
            _leave_if_done(frame, frames)
            stack.extend(subdirs)
    except OSError as exc:
        _close_frames(frames)
        snap.discard()
        raise SnapshotError("capture", f"{root}: {exc}") from exc
    _close_frames(frames)
    return snap


def _capture_one(store: Store, dir_fd: int, name: str, path: str, st: os.stat_result) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        return replace(_entry(path, st), target=os.readlink(name, dir_fd=dir_fd))
    if not stat.S_ISREG(st.st_mode):
        return _entry(path, st)  # FIFOs are never opened; devices and sockets have no content
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)  # the stat of what we actually copy
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EAGAIN, f"{path!r} changed type during capture")
        key, _ = store.put(fd, st.st_size)
    finally:
        os.close(fd)
    return replace(_entry(path, st), blob=key)


@dataclass(slots=True)
class ScanStats:
    """Counts filled in by ``diff`` as it walks."""

    scanned: int = 0


def diff(snapshot: Snapshot, root: str, *, stats: ScanStats | None = None) -> Iterator[Change]:
    """Yield how the live tree under ``root`` differs from ``snapshot``, in path order.

    Pure: reads the tree and the store, mutates nothing. Path order is depth-first with
    names sorted per directory, so a parent always precedes its children. A path is
    unchanged only if type, mode, uid, gid, size, inode, mtime and ctime all match; ctime
    cannot be set from user space, so ``os.utime`` cannot hide a write.
    """
    scan = stats if stats is not None else ScanStats()
    root_fd = _open_root(root, "diff")
    top = _Frame(root_fd)
    frames = {top}
    try:
        root_entry = snapshot.entries[""]
        root_st = os.fstat(root_fd)
        if _sig(root_st) != root_entry.sig:
            yield Change(ChangeKind.MODIFY, "", root_entry)
        stack: list[Change | tuple[_Frame | None, str, str]] = [(None, "", "")]
        while stack:
            item = stack.pop()
            if isinstance(item, Change):
                yield item
                continue
            parent, name, path = item
            frame = top if parent is None else _enter(parent, name, frames)
            items = _diff_dir(snapshot, frame, path, scan, root_st.st_dev)
            _leave_if_done(frame, frames)
            items.reverse()
            stack.extend(items)
    except OSError as exc:
        raise SnapshotError("diff", f"{root}: {exc}") from exc
    finally:
        _close_frames(frames)


def _foreign_mount(de: os.DirEntry[str], dev: int) -> bool:
    """A directory on another filesystem: a mount point, left alone like ``find -xdev``.

    Only root can mount, so the function cannot use this to hide its writes; it keeps
    what an operator mounted inside a protected tree from being snapshotted or removed.
    """
    return de.is_dir(follow_symlinks=False) and de.stat(follow_symlinks=False).st_dev != dev


def _diff_dir(
    snapshot: Snapshot, frame: _Frame, path: str, scan: ScanStats, dev: int
) -> list[Change | tuple[_Frame | None, str, str]]:
    with os.scandir(frame.fd) as it:
        live = {de.name: de for de in it if not _foreign_mount(de, dev)}
    old = snapshot.children.get(path, {})
    if live.keys() == old.keys():
        names = snapshot.sorted_names(path)
    else:
        names = sorted(live.keys() | old.keys())
    items: list[Change | tuple[_Frame | None, str, str]] = []
    scan.scanned += len(live)
    for name in names:
        de = live.get(name)
        oe = old.get(name)
        if de is not None and oe is not None:
            # Hot path: one statx and one tuple compare per unchanged entry.
            st = de.stat(follow_symlinks=False)
            if _sig(st) == oe.sig:
                if oe.is_dir:
                    frame.pending += 1
                    items.append((frame, name, _join(path, name)))
                continue
        child = _join(path, name)
        if de is None:
            assert oe is not None
            items.extend(Change(ChangeKind.DELETE, e.path, e) for e in snapshot.subtree(child))
            continue
        if oe is None:
            items.append(Change(ChangeKind.ADD, child))
            continue
        if stat.S_IFMT(st.st_mode) != stat.S_IFMT(oe.st_mode):
            items.append(Change(ChangeKind.MODIFY, child, oe, recreate=True))
            if oe.is_dir:  # the old contents are gone with it: restore them all
                sub = snapshot.subtree(child)
                next(sub)
                items.extend(Change(ChangeKind.DELETE, e.path, e) for e in sub)
        elif oe.is_dir:
            items.append(Change(ChangeKind.MODIFY, child, oe))
            frame.pending += 1
            items.append((frame, name, child))
        elif stat.S_ISREG(st.st_mode):
            recreate = _content_changed(snapshot.store, frame.fd, name, st, oe)
            items.append(Change(ChangeKind.MODIFY, child, oe, recreate=recreate))
        else:
            # Symlinks, FIFOs and devices cannot change target/rdev in place: only a new
            # inode can hold other "content". Same inode → owner/mode/times only.
            # Inode numbers are reused at once on ext4, so a link's target is compared too.
            recreate = (
                not stat.S_ISLNK(st.st_mode)
                or st.st_ino != oe.ino
                or os.readlink(name, dir_fd=frame.fd) != oe.target
            )
            items.append(Change(ChangeKind.MODIFY, child, oe, recreate=recreate))
    return items


def _content_changed(
    store: Store, dir_fd: int, name: str, st: os.stat_result, entry: Entry
) -> bool:
    """Whether a regular file's bytes differ; only reads content when stat is ambiguous."""
    if st.st_ino != entry.ino or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
        return True
    # Same inode, size and mtime but another ctime: a chmod/chown, or a write followed by
    # os.utime back to the old mtime. Only the bytes can tell which.
    assert entry.blob is not None
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_ino != entry.ino:
            return True
        blob = store.open(entry.blob)
        try:
            return not same_content(fd, blob, entry.size)
        finally:
            os.close(blob)
    finally:
        os.close(fd)


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
            fd = os.open(parts[j], _DIR_FLAGS, dir_fd=base)
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
        parent, name = _split(change.path)
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
            fd = os.open(name, _READ_FLAGS, dir_fd=pfd)
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
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
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
                parent, name = _split(path)
                self._utime(self.dir_fd(parent), name, entry)
            else:
                os.utime(self.root_fd, ns=(entry.atime_ns, entry.mtime_ns))
        for path in self.sockets:
            self.snap._drop(path)
            self.touched.discard(path)
        for path in sorted(self.touched, key=lambda p: p.split("/")):  # parents first: cache hits
            entry = self.snap.entries.get(path)
            if entry is None:
                continue
            if path:
                parent, name = _split(path)
                st = os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)
            else:
                st = os.fstat(self.root_fd)
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(entry.st_mode):
                # Replaced by a concurrent writer since it was restored: keep the old
                # record, so the next diff sees the change (a link must never be
                # recorded as a link without a target).
                continue
            self.snap._set(
                replace(
                    entry,
                    st_mode=st.st_mode,
                    uid=st.st_uid,
                    gid=st.st_gid,
                    size=st.st_size,
                    ino=st.st_ino,
                    mtime_ns=st.st_mtime_ns,
                    ctime_ns=st.st_ctime_ns,
                )
            )


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
    stack = [(os.open(name, _DIR_FLAGS, dir_fd=dir_fd), dir_fd, name)]
    try:
        while stack:
            fd = stack[-1][0]
            descended = False
            with os.scandir(fd) as it:
                for de in it:
                    if de.is_dir(follow_symlinks=False):
                        stack.append((os.open(de.name, _DIR_FLAGS, dir_fd=fd), fd, de.name))
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
    root_fd = _open_root(root, "apply")
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


def rewind(snapshot: Snapshot, root: str) -> Metrics:
    """diff + apply + refresh: bring ``root`` back to ``snapshot`` and report what it took."""
    start = time.perf_counter()
    scan = ScanStats()
    changes = list(diff(snapshot, root, stats=scan))
    metrics = apply(snapshot, root, changes) if changes else Metrics()
    metrics.scanned = scan.scanned
    metrics.ms = (time.perf_counter() - start) * 1000
    return metrics
