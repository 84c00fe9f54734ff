"""The data model of file snapshots: entries, snapshots, changes, metrics and the one error.

Pure data, no I/O: runs wherever the sidecar (either driver) imports it. Paths are relative
``str`` decoded with surrogateescape (what ``os.scandir`` on a directory fd yields), so every
byte name round-trips; "" is the root.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from rewind.files.store import Store

#: (mode, uid, gid, size, ino, mtime_ns, ctime_ns): what ``diff`` compares, never mtime alone.
Sig = tuple[int, int, int, int, int, int, int]


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

    sig: Sig = field(init=False, repr=False, compare=False)
    is_dir: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed because diff compares it once per entry on the hot path.
        sig = (self.st_mode, self.uid, self.gid, self.size, self.ino, self.mtime_ns, self.ctime_ns)
        object.__setattr__(self, "sig", sig)
        object.__setattr__(self, "is_dir", stat.S_ISDIR(self.st_mode))

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result) -> Entry:
        """The record of ``path`` from its lstat, without target or content."""
        return cls(
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

    def refreshed(self, st: os.stat_result) -> Entry:
        """This record with the stat of its restored inode; atime, target, device numbers
        and content stay as recorded."""
        new = Entry.from_stat(self.path, st)
        return replace(
            new, atime_ns=self.atime_ns, target=self.target, rdev=self.rdev, blob=self.blob
        )


def stat_sig(st: os.stat_result) -> Sig:
    """The ``Entry.sig`` a live lstat result would have."""
    return (
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_ino,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


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


@dataclass(slots=True)
class ScanStats:
    """Counts filled in by ``diff`` as it walks."""

    scanned: int = 0


def join_path(parent: str, name: str) -> str:
    """``parent/name``, or ``name`` below the root ("")."""
    return f"{parent}/{name}" if parent else name


def split_path(path: str) -> tuple[str, str]:
    """(parent, name) of a relative path; the parent of a top-level name is ""."""
    parent, _, name = path.rpartition("/")
    return parent, name


def path_order(change: Change) -> list[str]:
    """Sort key for path order: a parent before its children, siblings by name."""
    return change.path.split("/") if change.path else []


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

    def record(self, entry: Entry) -> None:
        """Add or replace the record of ``entry.path`` (its parent must be recorded)."""
        self.entries[entry.path] = entry
        if entry.path:
            parent, name = split_path(entry.path)
            kids = self.children.setdefault(parent, {})
            if name not in kids:
                self._sorted.pop(parent, None)
            kids[name] = entry
        if entry.is_dir:
            self.children.setdefault(entry.path, {})

    def forget(self, path: str) -> None:
        """Forget a path that cannot be restored (a socket) so diffs stay quiet."""
        self.entries.pop(path, None)
        parent, name = split_path(path)
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
                stack.extend(join_path(p, n) for n in reversed(self.sorted_names(p)))

    def discard(self) -> None:
        """Delete the stored contents; the snapshot is unusable afterwards."""
        self.store.discard()
