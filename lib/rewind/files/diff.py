"""The pure diff: how a live tree differs from a snapshot, as changes in path order.

Runs inside the sidecar. Reads the tree and the store, mutates nothing (``apply`` does).
A path is unchanged only if type, mode, uid, gid, size, inode, mtime and ctime all match;
ctime cannot be set from user space, so ``os.utime`` cannot hide a write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from rewind.files.model import (
    Change,
    ChangeKind,
    Entry,
    ScanStats,
    Snapshot,
    SnapshotError,
    join_path,
    stat_sig,
)
from rewind.files.store import Store, same_content
from rewind.files.walk import READ_FLAGS, Frame, Frames, foreign_mount, open_root

_Item = Change | tuple[Frame | None, str, str]  # a change to yield, or a directory to enter


def diff(snapshot: Snapshot, root: str, *, stats: ScanStats | None = None) -> Iterator[Change]:
    """Yield how the live tree under ``root`` differs from ``snapshot``, in path order.

    Pure: reads the tree and the store, mutates nothing. Path order is depth-first with
    names sorted per directory, so a parent always precedes its children.
    """
    scan = stats if stats is not None else ScanStats()
    frames = Frames(open_root(root, "diff"))
    try:
        root_entry = snapshot.entries[""]
        root_st = os.fstat(frames.top.fd)
        if stat_sig(root_st) != root_entry.sig:
            yield Change(ChangeKind.MODIFY, "", root_entry)
        stack: list[_Item] = [(None, "", "")]
        while stack:
            item = stack.pop()
            if isinstance(item, Change):
                yield item
                continue
            parent, name, path = item
            frame = frames.top if parent is None else frames.enter(parent, name)
            items = _diff_dir(snapshot, frame, path, scan, root_st.st_dev)
            frames.leave_if_done(frame)
            items.reverse()
            stack.extend(items)
    except OSError as exc:
        raise SnapshotError("diff", f"{root}: {exc}") from exc
    finally:
        frames.close()


def _diff_dir(
    snapshot: Snapshot, frame: Frame, path: str, scan: ScanStats, dev: int
) -> list[_Item]:
    """The changes and subdirectories to enter of one directory, in name order."""
    with os.scandir(frame.fd) as it:
        live = {de.name: de for de in it if not foreign_mount(de, dev)}
    old = snapshot.children.get(path, {})
    if live.keys() == old.keys():
        names = snapshot.sorted_names(path)
    else:
        names = sorted(live.keys() | old.keys())
    items: list[_Item] = []
    scan.scanned += len(live)
    for name in names:
        de = live.get(name)
        oe = old.get(name)
        if de is not None and oe is not None:
            # Hot path: one statx and one tuple compare per unchanged entry.
            st = de.stat(follow_symlinks=False)
            if stat_sig(st) == oe.sig:
                if oe.is_dir:
                    frame.pending += 1
                    items.append((frame, name, join_path(path, name)))
                continue
        child = join_path(path, name)
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
        else:
            recreate = recreate_needed(snapshot.store, frame.fd, name, st, oe)
            items.append(Change(ChangeKind.MODIFY, child, oe, recreate=recreate))
    return items


def recreate_needed(store: Store, dir_fd: int, name: str, st: os.stat_result, entry: Entry) -> bool:
    """Whether a non-directory of the same type as ``entry`` but another stat must be
    rebuilt (new inode, other content or target), not just get owner, mode and times back."""
    if stat.S_ISREG(st.st_mode):
        return content_changed(store, dir_fd, name, st, entry)
    # Symlinks, FIFOs and devices cannot change target/rdev in place: only a new inode can
    # hold other "content". Same inode → owner/mode/times only. Inode numbers are reused
    # at once on ext4, so a link's target is compared too.
    return (
        not stat.S_ISLNK(st.st_mode)
        or st.st_ino != entry.ino
        or os.readlink(name, dir_fd=dir_fd) != entry.target
    )


def content_changed(store: Store, dir_fd: int, name: str, st: os.stat_result, entry: Entry) -> bool:
    """Whether a regular file's bytes differ; only reads content when stat is ambiguous."""
    if st.st_ino != entry.ino or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
        return True
    # Same inode, size and mtime but another ctime: a chmod/chown, or a write followed by
    # os.utime back to the old mtime. Only the bytes can tell which.
    assert entry.blob is not None
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
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
