"""File snapshots for the REWIND sidecar: capture a tree, diff it, apply the difference back.

``snapshot`` is the engine (pure ``diff``, mutating ``apply``); ``store`` keeps file contents;
``local`` and ``docker`` are the sidecar's drivers. Nothing here runs on import.
"""

from rewind.files.snapshot import (
    Change,
    ChangeKind,
    Entry,
    Metrics,
    Snapshot,
    SnapshotError,
    apply,
    capture,
    diff,
    rewind,
)

__all__ = [
    "Change",
    "ChangeKind",
    "Entry",
    "Metrics",
    "Snapshot",
    "SnapshotError",
    "apply",
    "capture",
    "diff",
    "rewind",
]
