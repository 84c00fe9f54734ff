"""File-tree snapshots, the entry point: ``capture`` a tree, ``rewind`` it back.

Runs inside the sidecar (the ``local`` driver, the file benchmark). The work is split as
continuity splits it: ``model`` (entries, snapshots, changes), ``walk`` (reading a tree
through ``O_NOFOLLOW`` directory fds), ``diff`` (pure) and ``apply`` (the only code that
mutates).
"""

from __future__ import annotations

import time

from rewind.files.apply import apply
from rewind.files.diff import diff
from rewind.files.model import Metrics, ScanStats, Snapshot, SnapshotError
from rewind.files.store import Store
from rewind.files.walk import open_root, record_tree


def capture(root: str, store_dir: str) -> Snapshot:
    """Record the tree under ``root``; contents of regular files go to a store in ``store_dir``.

    Runs in the sidecar. ``store_dir`` must lie outside ``root``. Raises SnapshotError.
    """
    root_fd = open_root(root, "capture")
    snap = Snapshot(root, Store(store_dir))
    try:
        record_tree(snap, root_fd)
    except OSError as exc:
        snap.discard()
        raise SnapshotError("capture", f"{root}: {exc}") from exc
    return snap


def rewind(snapshot: Snapshot, root: str) -> Metrics:
    """diff + apply + refresh: bring ``root`` back to ``snapshot`` and report what it took."""
    start = time.perf_counter()
    scan = ScanStats()
    changes = list(diff(snapshot, root, stats=scan))
    metrics = apply(snapshot, root, changes) if changes else Metrics()
    metrics.scanned = scan.scanned
    metrics.ms = (time.perf_counter() - start) * 1000
    return metrics
