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
  lower layers; ``rewind.files.layers``). Content of lower files is copied from the layer
  itself when restored.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from rewind.files.apply import apply
from rewind.files.diff import recreate_needed
from rewind.files.layers import LayerStore, Lowers, is_opaque, is_whiteout
from rewind.files.model import (
    Change,
    ChangeKind,
    Entry,
    Metrics,
    Snapshot,
    SnapshotError,
    join_path,
    path_order,
    stat_sig,
)
from rewind.files.walk import PairWalk, read_entry

#: What one recorded entry costs against the storage limit besides its file blocks.
ENTRY_COST = 256


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
        walk = PairWalk(self.upper, self.merged)
        try:
            self.snap.record(Entry.from_stat("", os.fstat(walk.mtop.fd)))
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
                child = join_path(path, de.name)
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
                self.snap.record(read_entry(self.snap.store, mfd, de.name, child, mst))
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
        self.snap.record(entry)
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
                child = join_path(q, name)
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
        walk = PairWalk(self.upper, self.merged)
        try:
            if stat_sig(os.fstat(walk.mtop.fd)) != root.sig:
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
        changes.sort(key=path_order)
        return changes, scanned

    def _candidates(
        self, path: str, ufd: int | None, lowers: Lowers
    ) -> tuple[dict[str, bool], dict[str, tuple[int, os.stat_result] | None]]:
        """The names of directory ``path`` that may have changed: the upper layer's (name ->
        is a directory there), the recorded ones, and lower ones a new opaque dir hides."""
        upper: dict[str, bool] = {}
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
        return upper, kids

    def _diff_dir(
        self, path: str, ufd: int | None, mfd: int, lowers: Lowers
    ) -> tuple[list[Change], int, list[tuple[str, bool]]]:
        upper, kids = self._candidates(path, ufd, lowers)
        changes: list[Change] = []
        subdirs: list[tuple[str, bool]] = []
        for name in sorted(kids):
            child = join_path(path, name)
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
            if stat_sig(st) == entry.sig:
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
            else:
                # A lower entry met for the first time has never been restored: rebuild it.
                recreate = fresh or recreate_needed(self.snap.store, mfd, name, st, entry)
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
