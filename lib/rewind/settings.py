"""The catalogue of the runtime's settings, and the one boolean parser (every process role).

One entry per environment variable: name, type, default (the image's where it differs),
allowed values and a one-line meaning. The Python readers (launcher, sidecar and file-driver
configs, the ``rewind`` command, ``rewind.debug``) take names, defaults and choices from
here; tests/unit/test_settings_catalogue.py checks the Go proxy's config.go, the image's
ENV block and docs/ENVVARS.md against it. Imports nothing of the runtime: every layer may
import it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Values that turn a boolean setting off (any case, surrounding blanks ignored); anything
#: else is on. The Go proxy's ``debugOn`` uses the same list.
FALSE_VALUES = ("", "0", "false", "no", "off")


def parse_bool(value: str | None) -> bool:
    """True unless ``value`` is absent, empty, 0, false, no or off (any case)."""
    return (value or "").strip().lower() not in FALSE_VALUES


@dataclass(frozen=True)
class Setting:
    """One environment variable of the runtime.

    ``kind`` says how it is parsed: ``bool`` (parse_bool), ``set`` (upstream OpenWhisk's
    rule: any non-empty value is on; kept so an upstream proxy and ours agree), ``choice``
    (one of ``choices``, exact), ``bytes``, ``duration``, ``json``, ``address``, ``path``,
    ``text``, ``int``. ``default`` applies when the variable is unset or empty outside the
    image; ``image`` is the image's value where it differs. ``by_proxy``: the proxy sets it
    for the launcher (not an operator's setting).
    """

    name: str
    kind: str
    default: str
    meaning: str
    role: str  # the process that reads it: proxy, launcher, sidecar, command
    choices: tuple[str, ...] = ()
    image: str | None = None
    by_proxy: bool = False

    @property
    def image_default(self) -> str:
        """The value in the image (its ENV block), which is ``default`` unless overridden."""
        return self.default if self.image is None else self.image


# -- proxy ------------------------------------------------------------------------------
COMPILER = Setting(
    "OW_COMPILER", "path", "/bin/compile", "prepares an action; set but empty: none", "proxy"
)
WAIT_FOR_ACK = Setting(
    "OW_WAIT_FOR_ACK", "set", "", "wait for the launcher's ack at start", "proxy", image="1"
)
LOG_INIT_ERROR = Setting(
    "OW_LOG_INIT_ERROR", "set", "", "generic /init errors, details in the log", "proxy", image="1"
)
EXECUTION_ENV = Setting(
    "OW_EXECUTION_ENV",
    "text",
    "",
    "what a pre-built action's bin/exec.env must hold",
    "proxy",
    image="openwhisk/action-python-v3.11",
)
OW_DEBUG = Setting("OW_DEBUG", "bool", "", "diagnostics on stderr, re-init allowed", "proxy")
DEBUG = Setting("REWIND_DEBUG", "bool", "", "diagnostics on stderr, re-init allowed", "proxy")
ALLOW_ACTION_SETTINGS = Setting(
    "REWIND_ALLOW_ACTION_SETTINGS",
    "bool",
    "",
    "an action's /init env may set any REWIND_* setting",
    "proxy",
)
INIT_ENV = Setting("REWIND_INIT_ENV", "json", "", "a default /init env (JSON object)", "proxy")
ACTION_ROOT = Setting(
    "REWIND_ACTION_ROOT", "path", "./action", "init attempt N goes to <root>/<N>", "proxy"
)
MAX_BODY = Setting("REWIND_MAX_BODY", "bytes", str(50 << 20), "largest request body", "proxy")
MAX_UNZIPPED = Setting(
    "REWIND_MAX_UNZIPPED", "bytes", str(1 << 30), "largest unzipped action archive", "proxy"
)
MEMORY = Setting(
    "REWIND_MEMORY",
    "choice",
    "auto",
    "memory backend",
    "proxy",
    choices=("auto", "kernel", "fork", "fresh", "inplace", "none"),
)
FILES = Setting(
    "REWIND_FILES",
    "choice",
    "off",
    "file rewinding: none, an in-container sidecar, a host sidecar",
    "proxy",
    choices=("off", "local", "docker"),
    image="local",
)
SIDECAR = Setting(
    "REWIND_SIDECAR",
    "address",
    "unix:/run/rewind/sidecar.sock",
    "the sidecar's address: unix:/abs/path or tcp:LOOPBACK-IP:PORT",
    "proxy",
)
SIDECAR_CMD = Setting(
    "REWIND_SIDECAR_CMD",
    "text",
    "/usr/local/bin/rewind sidecar",
    "how the proxy starts the local sidecar",
    "proxy",
)
USER = Setting("REWIND_USER", "text", "", "the function's user", "proxy", image="rewind")
SNAPSHOT_USER = Setting(
    "REWIND_SNAPSHOT_USER",
    "text",
    "",
    "the snapshot process's own user",
    "proxy",
    image="rewind-snapshot",
)
STOP_GRACE = Setting("REWIND_STOP_GRACE", "duration", "2s", "SIGTERM to SIGKILL delay", "proxy")

# -- launcher ---------------------------------------------------------------------------
CHECKPOINT = Setting(
    "REWIND_CHECKPOINT",
    "choice",
    "init",
    "when the checkpoint is taken",
    "launcher",
    choices=("init", "warmup", "first-request"),
)
WARMUP = Setting("REWIND_WARMUP", "json", "", "the warm-up run's payload", "launcher")
PREFAULT = Setting(
    "REWIND_PREFAULT",
    "choice",
    "off",
    "fork standbys prefault recently written pages",
    "launcher",
    choices=("off", "on"),
)
METRICS_FILE = Setting(
    "REWIND_METRICS_FILE", "path", "", "one JSON line of timings per request", "launcher"
)
KERNEL = Setting(
    "REWIND_KERNEL",
    "choice",
    "",
    "the kernel helper's result (also error:<errno>)",
    "launcher",
    choices=("", "available", "absent"),
    by_proxy=True,
)
FUNCTION_IDS = Setting(
    "REWIND_FUNCTION_IDS", "text", "", "uid:gid of the function user", "launcher", by_proxy=True
)
ACTION_DIR = Setting(
    "REWIND_ACTION_DIR", "path", "", "the action's directory", "launcher", by_proxy=True
)
STATUS_FD = Setting(
    "REWIND_STATUS_FD", "int", "", "the status pipe's fd", "launcher", by_proxy=True
)
LAUNCHER_WAIT_FOR_ACK = Setting(
    "__OW_WAIT_FOR_ACK", "set", "", "send the ack at start", "launcher", by_proxy=True
)

# -- file sidecar -----------------------------------------------------------------------
PATHS = Setting("REWIND_PATHS", "path", "", "colon-separated roots to protect", "sidecar")
SNAPSHOT_DIR = Setting(
    "REWIND_SNAPSHOT_DIR",
    "path",
    "/var/lib/rewind/snapshots",
    "the local driver's snapshot store",
    "sidecar",
)
HOST_SNAPSHOT_DIR = Setting(
    "REWIND_HOST_SNAPSHOT_DIR",
    "path",
    "/var/lib/rewind/host-snapshots",
    "the docker driver's snapshot store",
    "sidecar",
)
HOST_MAX_BYTES = Setting(
    "REWIND_HOST_MAX_BYTES", "bytes", str(1 << 30), "largest checkpoint per container", "sidecar"
)

# -- the rewind command -----------------------------------------------------------------
PROXY = Setting("REWIND_PROXY", "path", "", "the proxy binary rewind serve runs", "command")

#: The variables that turn diagnostics on (either one).
DEBUG_VARS = (DEBUG.name, OW_DEBUG.name)

#: Every setting, by name.
CATALOGUE: dict[str, Setting] = {
    s.name: s for s in globals().copy().values() if isinstance(s, Setting)
}
