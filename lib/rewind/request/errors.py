"""Exit codes and exceptions shared by the launcher's processes.

The proxy reads the launcher's exit code to tell a bad action at /init from a crashed
request at /run, and to stop restarting a launcher that failed closed. The numbers are
a protocol: `proxy/actionloop` keeps the same values.
"""

from __future__ import annotations

# Launcher process exit codes (seen by the proxy).
EXIT_OK = 0  # stdin reached EOF: the proxy is done with us.
EXIT_LOAD_ERROR = 3  # the action or the configuration could not be loaded at /init.
EXIT_FAIL_CLOSED = 5  # a rewind could not be completed: the state may be dirty.
# A request process died part-way through reading its request: the rest of it may still be
# in stdin, where the next request process would take it for a request. The proxy answers
# that request as exited and starts a new launcher, with a new stdin, for the next one.
EXIT_STDIN_LOST = 6

# Request process exit codes (seen by the snapshot process only).
CHILD_RESULT_WRITTEN = 0
CHILD_STDIN_EOF = 64  # the standby child saw EOF instead of a request.
CHILD_ACTION_EXITED = 65  # the action raised SystemExit / KeyboardInterrupt.
CHILD_INTERNAL_ERROR = 70


class LauncherError(Exception):
    """Base class of every error the launcher reports itself."""


class ConfigError(LauncherError):
    """A REWIND_* setting is invalid."""


class ActionLoadError(LauncherError):
    """The action module or its entry point could not be loaded."""


class FailClosed(LauncherError):
    """A rewind could not be completed; the launcher must stop serving."""
