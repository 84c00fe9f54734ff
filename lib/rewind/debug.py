"""Whether the runtime may write diagnostics of its own (every process role).

The invoker turns the container's stdout and stderr into users' activation logs, so the
runtime prints nothing of its own there unless an operator asks for it. ``REWIND_DEBUG``
and ``OW_DEBUG`` parse the same way here and in the Go proxy (``debugOn`` in
proxy/actionloop/config.go): the catalogue's boolean rule (``rewind.settings.parse_bool``:
empty, ``0``, ``false``, ``no`` and ``off``, any case, are off, anything else is on);
either variable turns debugging on.
"""

from __future__ import annotations

from collections.abc import Mapping

from rewind.settings import DEBUG_VARS
from rewind.settings import parse_bool as flag_on

__all__ = ["DEBUG_VARS", "debug_enabled", "flag_on"]


def debug_enabled(environ: Mapping[str, str]) -> bool:
    """True when REWIND_DEBUG or OW_DEBUG in ``environ`` turns diagnostics on."""
    return any(flag_on(environ.get(var)) for var in DEBUG_VARS)
