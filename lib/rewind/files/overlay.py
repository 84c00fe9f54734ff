"""Rewind of an overlayfs writable layer through its merged mount (host sidecar process).

The ``docker`` driver's core, independent of Docker: given a container's lower layers, its
upper (writable) layer and the merged mount, ``OverlaySnapshot.capture`` records what the
upper layer holds and ``rewind`` makes the merged view equal to that record again.

* **Reading.** The upper dir says what may have changed: every path the container created,
  modified or deleted since it started is there (new entries, copied-up entries, whiteouts =
  character devices 0/0, opaque directories = ``trusted.overlay.opaque`` "y"). Paths that are
  not in it are the read-only image layers, unchanged by construction.
* **Writing** happens only through the merged dir (writing into the upper dir of a mounted
  overlay is unreliable: cached lookups, deleted files staying visible). Repairs reuse the
  snapshot engine's ``apply``: fd-relative, ``O_NOFOLLOW`` in every component, files restored
  as a new file + ``rename``, never written through an existing inode.
* **Expected state** of a path, in order: the captured record (the paths of the upper layer
  at the checkpoint, plus every path restored since); absent if it was a whiteout at the
  checkpoint or lies under a directory that was opaque then; else what the lower layers
  show (looked up with overlay semantics: topmost layer wins, whiteouts and opaque dirs hide
  lower layers). Content of lower files is copied from the layer itself when restored.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import replace

from rewind.files.snapshot import (
    Change,
    ChangeKind,
    Entry,
    Metrics,
    Snapshot,
    SnapshotError,
    _capture_one,
    _close_frames,
    _content_changed,
    _enter,
    _entry,
    _Frame,
    _leave_if_done,
    _sig,
    apply,
)
from rewind.files.store import Store

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOWER_KEY = "lower:"
OPAQUE_XATTR = "trusted.overlay.opaque"
#: What one recorded entry costs against the storage limit besides its file blocks.
ENTRY_COST = 256


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def is_whiteout(st: os.stat_result) -> bool:
    """An overlay whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(dir_fd: int) -> bool:
    """Whether an upper/lower directory (open fd) hides the layers below it."""
    try:
        return os.getxattr(dir_fd, OPAQUE_XATTR) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return False
        raise


def _open_rel(base: int, path: str) -> int:
    """Open ``path`` (relative, "" = base) below ``base`` one component at a time, O_NOFOLLOW."""
    fd = os.dup(base)
    if not path:
        return fd
    try:
        for part in path.split("/"):
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class Lowers:
    """The read-only lower layers (top first) seen as one tree, with overlay semantics."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = roots
        self._fds: list[int] = []
        self._contrib: dict[str, list[int]] = {}

    def __enter__(self) -> Lowers:
        try:
            for root in self.roots:
                self._fds.append(os.open(root, _DIR_FLAGS))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._contrib.clear()

    def _dir(self, layer: int, path: str) -> int | None:
        try:
            return _open_rel(self._fds[layer], path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise

    def _lstat(self, layer: int, path: str) -> os.stat_result | None:
        parent, _, name = path.rpartition("/")
        fd = self._dir(layer, parent)
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def _opaque(self, layer: int, path: str) -> bool:
        fd = self._dir(layer, path)
        if fd is None:
            return False
        try:
            return is_opaque(fd)
        finally:
            os.close(fd)

    def contributors(self, path: str) -> list[int]:
        """Layers (top first) whose directory ``path`` shows through in the merged lowers."""
        cached = self._contrib.get(path)
        if cached is not None:
            return cached
        result: list[int] = []
        if not path:
            for layer in range(len(self._fds)):
                result.append(layer)
                if self._opaque(layer, ""):
                    break
        else:
            for layer in self.contributors(_parent(path)):
                st = self._lstat(layer, path)
                if st is None:
                    continue
                if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    break  # hides this name in every layer below
                result.append(layer)
                if self._opaque(layer, path):
                    break
        self._contrib[path] = result
        return result

    def lookup(self, path: str) -> tuple[int, os.stat_result] | None:
        """The topmost layer holding ``path`` and its lstat; None when absent or whited out."""
        for layer in self.contributors(_parent(path)):
            st = self._lstat(layer, path)
            if st is None:
                continue
            return None if is_whiteout(st) else (layer, st)
        return None

    def children(self, path: str) -> dict[str, tuple[int, os.stat_result]]:
        """The visible entries of directory ``path`` of the merged lowers."""
        seen: dict[str, tuple[int, os.stat_result] | None] = {}
        for layer in self.contributors(path):
            fd = self._dir(layer, path)
            if fd is None:
                continue
            try:
                with os.scandir(fd) as it:
                    for de in it:
                        if de.name in seen:
                            continue
                        st = de.stat(follow_symlinks=False)
                        seen[de.name] = None if is_whiteout(st) else (layer, st)
            finally:
                os.close(fd)
        return {name: hit for name, hit in seen.items() if hit is not None}

    def entry(self, path: str, layer: int, st: os.stat_result) -> Entry:
        """The record of a lower path; a regular file's blob names the layer file itself."""
        e = _entry(path, st)
        if stat.S_ISLNK(st.st_mode):
            parent, _, name = path.rpartition("/")
            fd = self._dir(layer, parent)
            if fd is None:
                raise OSError(errno.ENOENT, f"lower {path!r} vanished")
            try:
                return replace(e, target=os.readlink(name, dir_fd=fd))
            finally:
                os.close(fd)
        if stat.S_ISREG(st.st_mode):
            return replace(e, blob=f"{_LOWER_KEY}{layer}:{path}")
        return e


class LayerStore(Store):
    """The blob store of one container, which also serves lower-layer files as blobs.

    Keys ``lower:<layer>:<path>`` open the file in the (read-only, root-owned) layer dir,
    one ``O_NOFOLLOW`` component at a time; other keys are the store's own blobs.
    """

    def __init__(self, path: str, lower_roots: list[str]) -> None:
        super().__init__(path)
        self.lower_roots = lower_roots

    def open(self, key: str) -> int:
        if not key.startswith(_LOWER_KEY):
            return super().open(key)
        layer, _, path = key[len(_LOWER_KEY) :].partition(":")
        root = os.open(self.lower_roots[int(layer)], _DIR_FLAGS)
        try:
            parent, _, name = path.rpartition("/")
            pfd = _open_rel(root, parent)
        finally:
            os.close(root)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=pfd)
        finally:
            os.close(pfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"lower {path!r} is not a regular file")
        return fd


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, amount: int) -> None:
        self.used += amount
        if self.used > self.limit:
            raise SnapshotError(
                "capture",
                f"the writable layer needs more than REWIND_HOST_MAX_BYTES={self.limit} "
                "bytes of snapshot storage; refusing to snapshot it",
            )


class OverlaySnapshot:
    """The checkpoint of one overlay writable layer and the rewind back to it.

    Not thread-safe: the driver serializes calls per container.
    """

    def __init__(self, lowers: list[str], upper: str, merged: str, store: LayerStore) -> None:
        self.lowers = lowers
        self.upper = upper
        self.merged = merged
        self.snap = Snapshot(merged, store)
        self.whiteouts: set[str] = set()  # whiteouts in the upper layer at the checkpoint
        self.opaque: set[str] = set()  # opaque upper directories at the checkpoint
        self.settled: set[str] = set()  # opaque dirs whose visible lower entries are recorded
        self.bytes = 0
        self._rebuilt: list[str] = []  # directories rebuilt by the current rewind

    @classmethod
    def capture(
        cls, lowers: list[str], upper: str, merged: str, store_dir: str, max_bytes: int
    ) -> OverlaySnapshot:
        """Record every path of the upper layer, as the merged mount shows it, and copy the
        content of its regular files into a store at ``store_dir`` (outside the layers).

        Raises SnapshotError, also when the copies would exceed ``max_bytes``.
        """
        self = cls(lowers, upper, merged, LayerStore(store_dir, lowers))
        budget = _Budget(max_bytes)
        try:
            self._capture(budget)
        except OSError as exc:
            self.discard()
            raise SnapshotError("capture", f"{merged}: {exc}") from exc
        except SnapshotError:
            self.discard()
            raise
        self.bytes = budget.used
        return self

    def _capture(self, budget: _Budget) -> None:
        walk = _PairWalk(self.upper, self.merged)
        try:
            self.snap._set(_entry("", os.fstat(walk.mtop.fd)))
            while True:
                step = walk.next()
                if step is None:
                    break
                path, ufd, mfd = step
                assert ufd is not None
                if is_opaque(ufd):
                    self.opaque.add(path)
                    self.settled.add(path)
                subdirs = self._capture_dir(path, ufd, mfd, budget)
                walk.push(path, [(name, True) for name in subdirs])
        finally:
            walk.close()

    def _capture_dir(self, path: str, ufd: int, mfd: int, budget: _Budget) -> list[str]:
        subdirs: list[str] = []
        with os.scandir(ufd) as it:
            for de in it:
                child = _join(path, de.name)
                ust = de.stat(follow_symlinks=False)
                if is_whiteout(ust):
                    self.whiteouts.add(child)
                    continue
                mst = os.stat(de.name, dir_fd=mfd, follow_symlinks=False)
                if stat.S_IFMT(mst.st_mode) != stat.S_IFMT(ust.st_mode):
                    raise OSError(errno.EAGAIN, f"{child!r} changed during the checkpoint")
                cost = ENTRY_COST
                if stat.S_ISREG(ust.st_mode):
                    cost += max(ust.st_blocks * 512, 0)
                budget.charge(cost)  # before copying: the limit is never exceeded on disk
                self.snap._set(_capture_one(self.snap.store, mfd, de.name, child, mst))
                if stat.S_ISDIR(ust.st_mode):
                    subdirs.append(de.name)
        return subdirs

    def discard(self) -> None:
        """Delete the stored contents; the snapshot is unusable afterwards."""
        self.snap.discard()

    # -- rewind ---------------------------------------------------------------------------

    def _hidden(self, path: str) -> bool:
        """Whether a directory above ``path`` was opaque at the checkpoint."""
        if "" in self.opaque:
            return True
        parts = path.split("/")
        return any("/".join(parts[:i]) in self.opaque for i in range(1, len(parts)))

    def expected(
        self, path: str, lowers: Lowers, hint: tuple[int, os.stat_result] | None = None
    ) -> Entry | None:
        """What ``path`` must be after the rewind (None = absent). Lower entries that
        will be compared or restored are added to the record, so the refresh after
        ``apply`` keeps them and an unchanged tree diffs empty next time."""
        entry = self.snap.entries.get(path)
        if entry is not None:
            return entry
        if path in self.whiteouts or self._hidden(path):
            return None
        found = hint if hint is not None else lowers.lookup(path)
        if found is None:
            return None
        entry = lowers.entry(path, *found)
        self.snap._set(entry)
        return entry

    def _below(self, path: str, lowers: Lowers) -> list[Change]:
        """DELETE changes that rebuild every expected descendant of ``path``, in path order."""
        out: list[Change] = []
        stack = [path]
        while stack:
            q = stack.pop()
            kids: dict[str, tuple[int, os.stat_result] | None] = dict.fromkeys(
                self.snap.children.get(q, {})
            )
            if q not in self.opaque and not self._hidden(q):
                for name, hit in lowers.children(q).items():
                    kids.setdefault(name, hit)
            found: list[str] = []
            for name in sorted(kids):
                child = _join(q, name)
                entry = self.expected(child, lowers, kids[name])
                if entry is None:
                    continue
                out.append(Change(ChangeKind.DELETE, child, entry))
                if entry.is_dir:
                    found.append(child)
                    self._rebuilt.append(child)
            stack.extend(reversed(found))
        return out  # the caller sorts all changes into path order

    def diff(self, lowers: Lowers) -> tuple[list[Change], int]:
        """The changes that bring the merged view back, and how many entries were scanned.

        Reads the upper layer (what may have changed) and the merged mount; writes nothing.
        """
        self._rebuilt = []
        changes: list[Change] = []
        scanned = 0
        root = self.snap.entries[""]
        walk = _PairWalk(self.upper, self.merged)
        try:
            if _sig(os.fstat(walk.mtop.fd)) != root.sig:
                changes.append(Change(ChangeKind.MODIFY, "", root))
            while True:
                step = walk.next()
                if step is None:
                    break
                path, ufd, mfd = step
                found, count, subdirs = self._diff_dir(path, ufd, mfd, lowers)
                scanned += count
                changes.extend(found)
                walk.push(path, subdirs)
        finally:
            walk.close()
        changes.sort(key=_order)
        return changes, scanned

    def _diff_dir(
        self, path: str, ufd: int | None, mfd: int, lowers: Lowers
    ) -> tuple[list[Change], int, list[tuple[str, bool]]]:
        upper: dict[str, bool] = {}  # name -> is a directory in the upper layer
        opaque_now = False
        if ufd is not None:
            with os.scandir(ufd) as it:
                for de in it:
                    upper[de.name] = de.is_dir(follow_symlinks=False)
            opaque_now = path not in self.settled and is_opaque(ufd)
        kids: dict[str, tuple[int, os.stat_result] | None] = dict.fromkeys(upper)
        for name in self.snap.children.get(path, {}):
            kids.setdefault(name, None)
        if opaque_now and not self._hidden(path):
            # Recreated (rm -rf + mkdir) over a lower dir: its lower entries are hidden now.
            for name, hit in lowers.children(path).items():
                if kids.get(name) is None:
                    kids[name] = hit
        changes: list[Change] = []
        subdirs: list[tuple[str, bool]] = []
        for name in sorted(kids):
            child = _join(path, name)
            try:
                st: os.stat_result | None = os.stat(name, dir_fd=mfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            fresh = child not in self.snap.entries
            entry = self.expected(child, lowers, kids[name])
            if entry is None:
                if st is not None:
                    changes.append(Change(ChangeKind.ADD, child))
                continue
            if st is None:
                changes.append(Change(ChangeKind.DELETE, child, entry))
                if entry.is_dir:
                    self._rebuilt.append(child)
                    changes.extend(self._below(child, lowers))
                continue
            descend = (
                entry.is_dir
                and stat.S_ISDIR(st.st_mode)
                and (upper.get(name, False) or bool(self.snap.children.get(child)))
            )
            if _sig(st) == entry.sig:
                if descend:
                    subdirs.append((name, upper.get(name, False)))
                continue
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(entry.st_mode):
                changes.append(Change(ChangeKind.MODIFY, child, entry, recreate=True))
                if entry.is_dir:
                    self._rebuilt.append(child)
                    changes.extend(self._below(child, lowers))
                continue
            if entry.is_dir:
                changes.append(Change(ChangeKind.MODIFY, child, entry))
                if descend:
                    subdirs.append((name, upper.get(name, False)))
            elif stat.S_ISREG(st.st_mode):
                recreate = fresh or _content_changed(self.snap.store, mfd, name, st, entry)
                changes.append(Change(ChangeKind.MODIFY, child, entry, recreate=recreate))
            else:
                recreate = (
                    fresh
                    or not stat.S_ISLNK(st.st_mode)
                    or st.st_ino != entry.ino
                    or os.readlink(name, dir_fd=mfd) != entry.target
                )
                changes.append(Change(ChangeKind.MODIFY, child, entry, recreate=recreate))
        return changes, len(kids), subdirs

    def rewind(self) -> Metrics:
        """Bring the merged view back to the checkpoint; raises SnapshotError."""
        start = time.perf_counter()
        try:
            with Lowers(self.lowers) as lowers:
                changes, scanned = self.diff(lowers)
        except OSError as exc:
            raise SnapshotError("diff", f"{self.merged}: {exc}") from exc
        metrics = apply(self.snap, self.merged, changes) if changes else Metrics()
        # Directories rebuilt over a lower dir are opaque now, and every lower entry they
        # must show has just been recorded: no need to list the lower layers again.
        self.settled.update(self._rebuilt)
        metrics.scanned = scanned
        metrics.ms = (time.perf_counter() - start) * 1000
        return metrics


def _order(change: Change) -> list[str]:
    """Path order: a parent before its children, siblings by name."""
    return change.path.split("/") if change.path else []


class _PairWalk:
    """Depth-first walk of the same directories in the upper layer and the merged mount.

    Children are opened relative to their parent's fd with O_NOFOLLOW (no link is ever
    followed, in any component); a parent fd is closed as soon as its last subdirectory
    has been entered, so a deep chain needs O(1) fds. A directory absent from the upper
    layer is walked in the merged mount only.
    """

    def __init__(self, upper: str, merged: str) -> None:
        self.uframes: set[_Frame] = set()
        self.mframes: set[_Frame] = set()
        self.utop = _Frame(os.open(upper, _DIR_FLAGS))
        self.uframes.add(self.utop)
        try:
            self.mtop = _Frame(os.open(merged, _DIR_FLAGS))
        except BaseException:
            self.close()
            raise
        self.mframes.add(self.mtop)
        self.stack: list[tuple[str, str, _Frame | None, _Frame | None]] = [("", "", None, None)]
        self.current: tuple[_Frame | None, _Frame] | None = None

    def next(self) -> tuple[str, int | None, int] | None:
        """The next directory: (path, upper fd or None, merged fd), or None at the end."""
        if not self.stack:
            return None
        path, name, up, mp = self.stack.pop()
        if mp is None:
            uf: _Frame | None = self.utop
            mf = self.mtop
        else:
            mf = _enter(mp, name, self.mframes)
            uf = _enter(up, name, self.uframes) if up is not None else None
        self.current = (uf, mf)
        return path, (uf.fd if uf is not None else None), mf.fd

    def push(self, path: str, subdirs: list[tuple[str, bool]]) -> None:
        """Queue the subdirectories of the directory ``next`` returned last."""
        assert self.current is not None
        uf, mf = self.current
        mf.pending = len(subdirs)
        if uf is not None:
            uf.pending = sum(1 for _, in_upper in subdirs if in_upper)
        items = [
            (_join(path, name), name, uf if in_upper else None, mf) for name, in_upper in subdirs
        ]
        _leave_if_done(mf, self.mframes)
        if uf is not None:
            _leave_if_done(uf, self.uframes)
        self.current = None
        self.stack.extend(reversed(items))

    def close(self) -> None:
        _close_frames(self.uframes)
        _close_frames(self.mframes)
