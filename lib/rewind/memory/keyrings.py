"""Kernel keyrings a request process starts with (request process, before the action runs).

Keyrings are not tied to a process: the user keyring (@u) and the user-session keyring
(@us) belong to the uid and outlive every process; a session keyring is inherited by
children; the persistent keyring (@persistent) lives for days; an in-place worker keeps its
thread and process keyrings and its default request-key keyring across requests. A key one
request stores in any of them would reach the next. So every request process, before the
action runs, joins a new anonymous session keyring and empties every other keyring it can
reach.

Where keyctl is refused (Docker's default seccomp profile and the image's shipped one
return EPERM; kernels without CONFIG_KEYS return ENOSYS), no request can store a key
either, and there is nothing to clear.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys

_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "arm64": 219}.get(platform.machine(), -1)

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_CLEAR = 7
KEYCTL_SET_REQKEY_KEYRING = 14
KEYCTL_GET_PERSISTENT = 22

KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEY_SPEC_USER_SESSION_KEYRING = -5
KEY_REQKEY_DEFL_DEFAULT = 0

#: keyctl is not there for this process: nothing can be stored, nothing to clear.
UNSUPPORTED = frozenset({errno.ENOSYS, errno.EPERM})

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def keyctl(op: int, *args: int) -> int:
    """keyctl(2); raises OSError with the errno on failure."""
    if _SYS_KEYCTL < 0:
        raise OSError(errno.ENOSYS, f"keyctl: unknown syscall number on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(_SYS_KEYCTL), ctypes.c_long(op), *map(ctypes.c_long, args))
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"keyctl({op}): {os.strerror(err)}")
    return int(ret)


def start_clean() -> bool:
    """Give this process fresh keyrings; False when keyctl is refused (nothing to clear).

    Raises OSError when a keyring exists but cannot be emptied: the request must not
    run with another request's keys.
    """
    if not join_new_session():
        return False
    keyctl(KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING)
    keyctl(KEYCTL_CLEAR, KEY_SPEC_USER_SESSION_KEYRING)
    # Thread and process keyrings are new after fork but stay with an in-place worker;
    # look them up without creating one.
    for spec in (KEY_SPEC_THREAD_KEYRING, KEY_SPEC_PROCESS_KEYRING):
        try:
            keyctl(KEYCTL_CLEAR, keyctl(KEYCTL_GET_KEYRING_ID, spec, 0))
        except OSError as exc:
            if exc.errno != errno.ENOKEY:
                raise
    try:
        persistent = keyctl(KEYCTL_GET_PERSISTENT, -1, KEY_SPEC_SESSION_KEYRING)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    else:
        keyctl(KEYCTL_CLEAR, persistent)
    keyctl(KEYCTL_SET_REQKEY_KEYRING, KEY_REQKEY_DEFL_DEFAULT)
    return True


def join_new_session() -> bool:
    """Only a new anonymous session keyring (False when keyctl is refused)."""
    try:
        keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0)  # NULL name: a new anonymous keyring
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return False
        raise
    return True


if __name__ == "__main__":
    # `python -m rewind.memory.keyrings CMD ARGS...`: run CMD in a new session keyring
    # (`rewind serve`: the runtime must not possess the caller's login session keyring).
    join_new_session()
    os.execvp(sys.argv[1], sys.argv[1:])
