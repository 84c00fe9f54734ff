"""The sidecar's ``local`` driver: protects chosen directories inside the container.

Runs in the sidecar process (root, in the action container). ``checkpoint`` captures every
protected root into a root-only snapshot directory outside those roots; ``rewind`` brings
each root back to it. Configuration comes from an injected environment, validated once.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewind.files.snapshot import Metrics, Snapshot, SnapshotError, capture, rewind

DEFAULT_SNAPSHOT_DIR = "/var/lib/rewind/snapshots"


class DriverError(SnapshotError):
    """A driver-level failure (bad configuration, rewind before checkpoint)."""


def _home_of(user: str) -> str:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise DriverError("config", f"REWIND_USER={user!r}: no such user") from None
    return "" if entry.pw_uid == 0 else entry.pw_dir


@dataclass(frozen=True)
class LocalConfig:
    """The protected roots and where their snapshots live."""

    paths: tuple[str, ...]
    snapshot_dir: str = DEFAULT_SNAPSHOT_DIR

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        paths: str | None = None,
        snapshot_dir: str | None = None,
    ) -> LocalConfig:
        """Read REWIND_PATHS / REWIND_ACTION_DIR / REWIND_USER / REWIND_SNAPSHOT_DIR;
        explicit arguments (the command-line options) win over the environment."""
        raw = paths if paths is not None else environ.get("REWIND_PATHS", "")
        if raw.strip():
            chosen = [p for p in raw.split(":") if p]
        else:
            chosen = ["/tmp"]
            if environ.get("REWIND_ACTION_DIR"):
                chosen.append(environ["REWIND_ACTION_DIR"])
            user = environ.get("REWIND_USER", "").strip()
            if user:
                home = _home_of(user)
                if home:
                    chosen.append(home)
        snap = snapshot_dir or environ.get("REWIND_SNAPSHOT_DIR") or DEFAULT_SNAPSHOT_DIR
        return cls(paths=tuple(dict.fromkeys(chosen)), snapshot_dir=snap)

    def validate(self) -> None:
        """Refuse configurations that could destroy the system or the snapshots."""
        if not os.path.isabs(self.snapshot_dir):
            raise DriverError("config", f"snapshot dir {self.snapshot_dir!r} is not absolute")
        snap = os.path.realpath(self.snapshot_dir)
        for path in self.paths:
            if not os.path.isabs(path):
                raise DriverError("config", f"protected path {path!r} is not absolute")
            real = os.path.realpath(path)
            if real == "/":
                raise DriverError("config", f"refusing to protect {path!r}: it is the root /")
            if snap == real or snap.startswith(real.rstrip("/") + "/"):
                raise DriverError(
                    "config",
                    f"refusing to protect {path!r}: it contains the snapshot dir {snap!r}",
                )
            if real.startswith(snap + "/"):
                raise DriverError("config", f"protected path {path!r} is inside the snapshot dir")
            if not os.path.isdir(real):
                raise DriverError("config", f"protected path {path!r} is not a directory")


class LocalDriver:
    """Checkpoint and rewind of the configured roots; the server serializes calls."""

    def __init__(self, config: LocalConfig) -> None:
        config.validate()
        self.config = config
        # Resolve once: a root swapped for a symlink later must not redirect us.
        self.roots = [os.path.realpath(p) for p in config.paths]
        os.makedirs(config.snapshot_dir, mode=0o700, exist_ok=True)
        os.chmod(config.snapshot_dir, 0o700)
        self.workdir = os.path.join(config.snapshot_dir, f"local-{os.getpid()}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.mkdir(self.workdir, 0o700)
        self.snapshots: list[Snapshot] | None = None
        self.generation = 0
        self.counts = {"checkpoints": 0, "rewinds": 0, "errors": 0}
        self.last: dict[str, Any] = {}

    def checkpoint(self, peer: object = None) -> dict[str, Any]:
        """Capture every root; only once per sidecar.

        The function runs as the same user as the launcher, so it could reach the
        sidecar's socket; refusing a second checkpoint keeps it from making its own
        changes the baseline. A restarted launcher rewinds to the existing one.
        """
        if self.snapshots is not None:
            self.counts["errors"] += 1
            raise DriverError("checkpoint", "a checkpoint exists already and is kept")
        start = time.perf_counter()
        self.generation += 1
        taken: list[Snapshot] = []
        try:
            for i, root in enumerate(self.roots):
                store = os.path.join(self.workdir, f"{self.generation}-{i}")
                taken.append(capture(root, store))
        except SnapshotError:
            for snap in taken:
                snap.discard()
            self.counts["errors"] += 1
            raise
        old, self.snapshots = self.snapshots, taken
        for snap in old or []:
            snap.discard()
        self.counts["checkpoints"] += 1
        entries = sum(len(s.entries) for s in taken)
        self.last = {"entries": entries, "ms": (time.perf_counter() - start) * 1000}
        return dict(self.last, roots=len(taken))

    def rewind(self, peer: object = None) -> dict[str, Any]:
        """Restore every root to the checkpoint; errors leave the checkpoint in place."""
        if self.snapshots is None:
            self.counts["errors"] += 1
            raise DriverError("rewind", "no checkpoint has been taken yet")
        start = time.perf_counter()
        total = Metrics()
        try:
            for snap in self.snapshots:
                m = rewind(snap, snap.root)
                total.scanned += m.scanned
                total.removed += m.removed
                total.restored += m.restored
                total.bytes_copied += m.bytes_copied
        except SnapshotError:
            self.counts["errors"] += 1
            raise
        total.ms = (time.perf_counter() - start) * 1000
        self.counts["rewinds"] += 1
        self.last = total.as_dict()
        return self.last

    def status(self, peer: object = None) -> dict[str, Any]:
        """Whether a checkpoint exists, the counts, the roots and the last metrics."""
        return {
            "driver": "local",
            "checkpointed": self.snapshots is not None,
            "roots": self.roots,
            **self.counts,
            "last": self.last,
        }

    def close(self) -> None:
        """Delete this process's snapshots."""
        for snap in self.snapshots or []:
            snap.discard()
        self.snapshots = None
        shutil.rmtree(self.workdir, ignore_errors=True)
