"""The launcher's settings, read once from the environment it was started with.

Every REWIND_* value is validated here with a clear error, so a typo fails /init
instead of silently choosing a weaker isolation mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewind.debug import debug_enabled
from rewind.launcher.errors import ConfigError

MEMORY_MODES = ("auto", "kernel", "fork", "fresh", "inplace", "none")
CHECKPOINT_POLICIES = ("init", "warmup", "first-request")
FILE_MODES = ("off", "local", "docker")
KERNEL_STATES = ("", "available", "absent")


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = environ.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class LauncherConfig:
    """Settings of one launcher process (see docs/ENVVARS.md)."""

    memory: str = "auto"
    checkpoint: str = "init"
    warmup: Any = None
    files: str = "off"
    sidecar: str = "unix:/run/rewind/sidecar.sock"
    kernel: str = ""  # REWIND_KERNEL, set by the proxy's rewindable helper
    wait_for_ack: bool = False
    debug: bool = False
    prefault: bool = False  # REWIND_PREFAULT: fork standbys write recently written pages
    metrics_file: str = ""  # REWIND_METRICS_FILE: per-request rewind timings (benchmarks)
    status_fd: int | None = None  # REWIND_STATUS_FD: our proxy's status pipe (launcher.status)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LauncherConfig:
        """Build the config from ``environ``; raise ConfigError on any bad value."""
        memory = _choice(environ, "REWIND_MEMORY", MEMORY_MODES, "auto")
        checkpoint = _choice(environ, "REWIND_CHECKPOINT", CHECKPOINT_POLICIES, "init")
        files = _choice(environ, "REWIND_FILES", FILE_MODES, "off")
        kernel = environ.get("REWIND_KERNEL", "")
        if kernel not in KERNEL_STATES and not kernel.startswith("error:"):
            raise ConfigError(f"REWIND_KERNEL={kernel!r} is not one of: available, absent")
        warmup: Any = None
        raw = environ.get("REWIND_WARMUP", "").strip()
        if checkpoint == "warmup":
            if not raw:
                raise ConfigError("REWIND_CHECKPOINT=warmup needs REWIND_WARMUP (a JSON payload)")
            try:
                warmup = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"REWIND_WARMUP is not valid JSON: {exc}") from None
            if not isinstance(warmup, dict | list):
                raise ConfigError("REWIND_WARMUP must be a JSON object or array")
        sidecar = environ.get("REWIND_SIDECAR", "").strip() or cls.sidecar
        if files != "off" and not sidecar.startswith(("unix:", "tcp:", "fd:")):
            raise ConfigError(f"REWIND_SIDECAR={sidecar!r} must start with unix:, tcp: or fd:")
        return cls(
            memory=memory,
            checkpoint=checkpoint,
            warmup=warmup,
            files=files,
            sidecar=sidecar,
            kernel=kernel,
            wait_for_ack=bool(environ.get("__OW_WAIT_FOR_ACK", "")),
            debug=debug_enabled(environ),
            metrics_file=environ.get("REWIND_METRICS_FILE", ""),
            prefault=_choice(environ, "REWIND_PREFAULT", ("off", "on"), "off") == "on",
            status_fd=_status_fd(environ.get("REWIND_STATUS_FD", "")),
        )


def _status_fd(raw: str) -> int | None:
    """REWIND_STATUS_FD as a descriptor number above fd 3, or None (absent or not a number:
    an upstream proxy never sets it, and the launcher must still run behind one)."""
    raw = raw.strip()
    if not raw.isdigit() or int(raw) <= 3:
        return None
    return int(raw)
