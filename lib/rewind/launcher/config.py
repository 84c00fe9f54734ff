"""The launcher's settings, read once from the environment it was started with.

Every REWIND_* value is validated here with a clear error, so a typo fails /init
instead of silently choosing a weaker isolation mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewind import settings
from rewind.debug import debug_enabled
from rewind.request.errors import ConfigError

MEMORY_MODES = settings.MEMORY.choices
CHECKPOINT_POLICIES = settings.CHECKPOINT.choices
FILE_MODES = settings.FILES.choices
KERNEL_STATES = settings.KERNEL.choices


def _choice(environ: Mapping[str, str], setting: settings.Setting) -> str:
    value = environ.get(setting.name, "").strip() or setting.default
    if value not in setting.choices:
        raise ConfigError(f"{setting.name}={value!r} is not one of: {', '.join(setting.choices)}")
    return value


@dataclass(frozen=True)
class LauncherConfig:
    """Settings of one launcher process (see docs/ENVVARS.md)."""

    memory: str = settings.MEMORY.default
    checkpoint: str = settings.CHECKPOINT.default
    warmup: Any = None
    files: str = settings.FILES.default
    sidecar: str = settings.SIDECAR.default
    kernel: str = ""  # REWIND_KERNEL, set by the proxy's rewindable helper
    wait_for_ack: bool = False
    debug: bool = False
    prefault: bool = False  # REWIND_PREFAULT: fork standbys write recently written pages
    metrics_file: str = ""  # REWIND_METRICS_FILE: per-request rewind timings (benchmarks)
    status_fd: int | None = None  # REWIND_STATUS_FD: our proxy's status pipe (launcher.status)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LauncherConfig:
        """Build the config from ``environ``; raise ConfigError on any bad value."""
        memory = _choice(environ, settings.MEMORY)
        checkpoint = _choice(environ, settings.CHECKPOINT)
        files = _choice(environ, settings.FILES)
        kernel = environ.get(settings.KERNEL.name, "")
        if kernel not in KERNEL_STATES and not kernel.startswith("error:"):
            raise ConfigError(f"REWIND_KERNEL={kernel!r} is not one of: available, absent")
        warmup: Any = None
        raw = environ.get(settings.WARMUP.name, "").strip()
        if checkpoint == "warmup":
            if not raw:
                raise ConfigError("REWIND_CHECKPOINT=warmup needs REWIND_WARMUP (a JSON payload)")
            try:
                warmup = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"REWIND_WARMUP is not valid JSON: {exc}") from None
            if not isinstance(warmup, dict | list):
                raise ConfigError("REWIND_WARMUP must be a JSON object or array")
        sidecar = environ.get(settings.SIDECAR.name, "").strip() or settings.SIDECAR.default
        if files != "off" and not sidecar.startswith(("unix:", "tcp:", "fd:")):
            raise ConfigError(f"REWIND_SIDECAR={sidecar!r} must start with unix:, tcp: or fd:")
        return cls(
            memory=memory,
            checkpoint=checkpoint,
            warmup=warmup,
            files=files,
            sidecar=sidecar,
            kernel=kernel,
            wait_for_ack=bool(environ.get(settings.LAUNCHER_WAIT_FOR_ACK.name, "")),
            debug=debug_enabled(environ),
            metrics_file=environ.get(settings.METRICS_FILE.name, ""),
            prefault=_choice(environ, settings.PREFAULT) == "on",
            status_fd=_status_fd(environ.get(settings.STATUS_FD.name, "")),
        )


def _status_fd(raw: str) -> int | None:
    """REWIND_STATUS_FD as a descriptor number above fd 3, or None (absent or not a number:
    an upstream proxy never sets it, and the launcher must still run behind one)."""
    raw = raw.strip()
    if not raw.isdigit() or int(raw) <= 3:
        return None
    return int(raw)
