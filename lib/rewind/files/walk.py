"""Reading live trees safely: directory fds, depth-first walks, and recording one path.

Runs inside the sidecar, for either driver (``diff``, ``capture`` and the overlay code all
walk with it). Every call goes through a directory fd opened with ``O_NOFOLLOW`` from its
parent's fd: no symlink is followed, not even in a parent component. Walks are iterative and
close a parent's fd once its last subdirectory is entered, so a deep chain costs O(1) fds.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from rewind.files.model import Entry, Snapshot, SnapshotError, join_path
from rewind.files.store import Store

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO be swapped in between stat and open, open() must not hang.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_root(root: str, op: str) -> int:
    """Open the root of a walk as a directory fd; raises SnapshotError naming ``op``."""
    try:
        return os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise SnapshotError(op, f"cannot open root {root!r} as a directory: {exc}") from exc


def open_below(base: int, path: str) -> int:
    """Open ``path`` (relative, "" = base) below ``base`` one component at a time, O_NOFOLLOW."""
    fd = os.dup(base)
    if not path:
        return fd
    try:
        for part in path.split("/"):
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def foreign_mount(de: os.DirEntry[str], dev: int) -> bool:
    """A directory on another filesystem: a mount point, left alone like ``find -xdev``.

    Only root can mount, so the function cannot use this to hide its writes; it keeps
    what an operator mounted inside a protected tree from being snapshotted or removed.
    """
    return de.is_dir(follow_symlinks=False) and de.stat(follow_symlinks=False).st_dev != dev


class Frame:
    """An open directory fd and how many of its subdirectories are still to be entered."""

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0


class Frames:
    """The open directory fds of one depth-first walk, starting at ``top``.

    A frame is closed once every subdirectory below it has been entered (the caller sets
    ``pending``), so only ancestors with pending subdirectories hold an fd.
    """

    def __init__(self, top_fd: int) -> None:
        self.top = Frame(top_fd)
        self._open = {self.top}

    def enter(self, parent: Frame, name: str) -> Frame:
        """Open subdirectory ``name`` of ``parent``; closes ``parent`` if it was its last."""
        frame = Frame(os.open(name, DIR_FLAGS, dir_fd=parent.fd))
        self._open.add(frame)
        parent.pending -= 1
        if parent.pending == 0:
            self._open.discard(parent)
            os.close(parent.fd)
        return frame

    def leave_if_done(self, frame: Frame) -> None:
        """Close ``frame`` now if it has no subdirectory left to enter."""
        if frame.pending == 0:
            self._open.discard(frame)
            os.close(frame.fd)

    def close(self) -> None:
        """Close every fd still open (the walk ended, or failed)."""
        for frame in self._open:
            os.close(frame.fd)
        self._open.clear()


def read_entry(store: Store, dir_fd: int, name: str, path: str, st: os.stat_result) -> Entry:
    """The record of ``name`` in ``dir_fd`` (lstat ``st``); a regular file's content is
    copied into ``store``, from the inode actually opened (``O_NOFOLLOW|O_NONBLOCK``)."""
    if stat.S_ISLNK(st.st_mode):
        return replace(Entry.from_stat(path, st), target=os.readlink(name, dir_fd=dir_fd))
    if not stat.S_ISREG(st.st_mode):
        return Entry.from_stat(path, st)  # FIFOs are never opened; devices have no content
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)  # the stat of what we actually copy
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EAGAIN, f"{path!r} changed type during capture")
        key, _ = store.put(fd, st.st_size)
    finally:
        os.close(fd)
    return replace(Entry.from_stat(path, st), blob=key)


def record_tree(snap: Snapshot, root_fd: int) -> None:
    """Record every path below the open directory ``root_fd`` into ``snap``, contents into
    its store; mount points below are skipped. Closes ``root_fd``; raises OSError."""
    frames = Frames(root_fd)
    try:
        root_st = os.fstat(root_fd)
        snap.record(Entry.from_stat("", root_st))
        stack: list[tuple[Frame | None, str, str]] = [(None, "", "")]
        while stack:
            parent, name, path = stack.pop()
            frame = frames.top if parent is None else frames.enter(parent, name)
            subdirs: list[tuple[Frame | None, str, str]] = []
            with os.scandir(frame.fd) as it:
                for de in it:
                    if foreign_mount(de, root_st.st_dev):
                        continue
                    child = join_path(path, de.name)
                    st = de.stat(follow_symlinks=False)
                    snap.record(read_entry(snap.store, frame.fd, de.name, child, st))
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append((frame, de.name, child))
            frame.pending = len(subdirs)
            frames.leave_if_done(frame)
            stack.extend(subdirs)
    finally:
        frames.close()


class PairWalk:
    """Depth-first walk of the same directories in two trees (an overlay's upper layer and
    its merged mount): ``next`` yields each directory, ``push`` queues its subdirectories.

    A directory absent from the first tree is walked in the second one only.
    """

    def __init__(self, upper: str, merged: str) -> None:
        self.uframes = Frames(os.open(upper, DIR_FLAGS))
        try:
            self.mframes = Frames(os.open(merged, DIR_FLAGS))
        except BaseException:
            self.uframes.close()
            raise
        self.utop = self.uframes.top
        self.mtop = self.mframes.top
        self.stack: list[tuple[str, str, Frame | None, Frame | None]] = [("", "", None, None)]
        self.current: tuple[Frame | None, Frame] | None = None

    def next(self) -> tuple[str, int | None, int] | None:
        """The next directory: (path, upper fd or None, merged fd), or None at the end."""
        if not self.stack:
            return None
        path, name, up, mp = self.stack.pop()
        if mp is None:
            uf: Frame | None = self.utop
            mf = self.mtop
        else:
            mf = self.mframes.enter(mp, name)
            uf = self.uframes.enter(up, name) if up is not None else None
        self.current = (uf, mf)
        return path, (uf.fd if uf is not None else None), mf.fd

    def push(self, path: str, subdirs: list[tuple[str, bool]]) -> None:
        """Queue the subdirectories (name, also in the upper tree) of the last ``next``."""
        assert self.current is not None
        uf, mf = self.current
        mf.pending = len(subdirs)
        if uf is not None:
            uf.pending = sum(1 for _, in_upper in subdirs if in_upper)
        items = [
            (join_path(path, name), name, uf if in_upper else None, mf)
            for name, in_upper in subdirs
        ]
        self.mframes.leave_if_done(mf)
        if uf is not None:
            self.uframes.leave_if_done(uf)
        self.current = None
        self.stack.extend(reversed(items))

    def close(self) -> None:
        """Close every fd of both trees."""
        self.uframes.close()
        self.mframes.close()
