"""Two identities: the snapshot process runs as a user that request processes cannot reach.

Request processes run as the function user B (REWIND_USER). If the snapshot process
shared B's uid, a request could prlimit, renice, re-pin, reschedule, stop or kill it, and
every later request would inherit the damage. So the proxy starts the launcher as the
snapshot user A (REWIND_SNAPSHOT_USER) with three ambient capabilities, and tells it B's
ids (REWIND_FUNCTION_IDS, which /init's env cannot override). The kernel rules that
decide who can act on whom (kill(2): sender ruid/euid against target ruid/suid;
setpriority(2), sched_setaffinity(2), sched_setscheduler(2): caller euid against target
ruid/euid; ioprio_set(2): caller ruid/euid against target ruid; prlimit(2): caller ruid
against all three target uids) leave no uid set that contains B and is out of B's reach,
so the snapshot process keeps CAP_SETUID and CAP_SETGID, confined by a seccomp filter:

- ``enter`` (launcher, before the action is imported): no_new_privs and the filter of
  ``setid_filter`` (set*uid only to A or B, and the like), then the signaller (below), then
  ids (A, B, A): the action's import code reads and writes files as B.
- ``become_snapshot`` (after the checkpoint): ids (A, A, A), catchable signals ignored.
- ``become_function`` (every request process, first thing after the fork): ids
  (B, B, B), no supplementary groups, no capability in any set. A uid change resets
  dumpable and the parent-death signal: callers set those afterwards.
- ``acting_as_function`` (inplace only): ptrace, pidfd_getfd and process_vm_writev compare
  the caller's REAL uid with the worker's, so the snapshot process takes ids (B, B, A)
  around those calls, while no request code runs, and goes back to (A, A, A) after.

A process at (A, A, A) cannot signal B's processes either (kill(2) above), and the
snapshot process must SIGKILL a request that overruns and whatever it left behind: the
``signaller`` does it, a process with CAP_KILL alone that signals only B's processes.
Without a snapshot user (a non-root proxy, no REWIND_SNAPSHOT_USER, the launcher started
by hand) nothing here changes ids: the snapshot process shares the function's identity.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from rewind.memory import setid_filter, sysapi
from rewind.memory.signaller import Signaller, send_direct
from rewind.request.errors import FailClosed

ENV = "REWIND_FUNCTION_IDS"  # "uid:gid" of the function user, set by the proxy only
KILL_TIMEOUT_S = 5.0  # leftovers of a request that outlive it fail closed

# Signals the snapshot process must keep: SIGCHLD (it waits for its request processes by
# pid, which SIG_IGN would break), SIGTERM (the proxy's way to stop it; only root and the
# snapshot user can send it), and those no process can catch.
_KEEP = {signal.SIGCHLD, signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT}


@dataclass(frozen=True)
class Identity:
    """The snapshot user's ids (A) and the function user's (B)."""

    snapshot_uid: int
    snapshot_gid: int
    function_uid: int
    function_gid: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Identity | None:
        """The identities the proxy asked for, or None (one shared identity)."""
        raw = environ.get(ENV, "").strip()
        if not raw:
            return None
        try:
            uid_s, gid_s = raw.split(":")
            uid, gid = int(uid_s), int(gid_s)
        except ValueError:
            raise FailClosed(f"{ENV}={raw!r} is not uid:gid") from None
        ruid, euid, suid = os.getresuid()
        rgid, egid, sgid = os.getresgid()
        if len({ruid, euid, suid}) != 1 or len({rgid, egid, sgid}) != 1:
            raise FailClosed(f"started with mixed ids {os.getresuid()}, {os.getresgid()}")
        ident = cls(ruid, rgid, uid, gid)
        if 0 in (ident.snapshot_uid, ident.function_uid, ident.snapshot_gid, ident.function_gid):
            raise FailClosed(f"neither user may be root ({ident})")
        if ident.snapshot_uid == uid or ident.snapshot_gid == gid:
            raise FailClosed(f"the snapshot user must differ from the function user ({ident})")
        return ident


_active: Identity | None = None
_signaller: Signaller | None = None
_saved_handlers: dict[int, object] = {}


def active() -> Identity | None:
    """The identities in force, or None when the snapshot shares the function's."""
    return _active


# ---- switching ids ------------------------------------------------------------------------


def _cap(*caps: int) -> int:
    mask = 0
    for c in caps:
        mask |= 1 << c
    return mask


def enter(ident: Identity) -> None:
    """Launcher, before the action is imported: filter, signaller, ids (A, B, A)."""
    global _active
    eff, perm, _ = sysapi.capabilities()
    need = _cap(sysapi.CAP_SETUID, sysapi.CAP_SETGID, sysapi.CAP_KILL)
    if eff & need != need:
        raise FailClosed(
            f"started without CAP_SETUID, CAP_SETGID and CAP_KILL (effective {eff:#x}): "
            "the proxy must start the launcher with them as ambient capabilities"
        )
    try:
        sysapi.install_seccomp_filter(filter_program(ident))
    except OSError as exc:
        raise FailClosed(f"cannot install the seccomp filter for CAP_SETUID: {exc}") from None
    _start_signaller(ident)
    # Only the signaller keeps CAP_KILL; nothing this process execs inherits any capability.
    keep = _cap(sysapi.CAP_SETUID, sysapi.CAP_SETGID)
    sysapi.clear_ambient_capabilities()
    sysapi.set_capabilities(keep, keep, 0)
    os.setgroups([])
    os.setresgid(ident.snapshot_gid, ident.function_gid, ident.snapshot_gid)
    os.setresuid(ident.snapshot_uid, ident.function_uid, ident.snapshot_uid)
    _active = ident


def become_snapshot() -> None:
    """After the checkpoint: ids (A, A, A) and every signal it does not need ignored."""
    _ignore_signals(_saved_handlers)
    if _active is not None:
        os.setresgid(_active.snapshot_gid, _active.snapshot_gid, _active.snapshot_gid)
        os.setresuid(_active.snapshot_uid, _active.snapshot_uid, _active.snapshot_uid)


def _ignore_signals(saved: dict[int, object]) -> None:
    """SIG_IGN for every catchable signal but _KEEP; the old handlers go into ``saved``."""
    for sig in range(1, signal.NSIG):
        # glibc keeps 32 and 33; None is a handler set outside Python: leave both alone.
        if sig in _KEEP or sig in (32, 33) or sig in saved:  # saved: already ignored
            continue
        try:
            if signal.getsignal(sig) is None:
                continue
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):
            continue


def become_function() -> None:
    """A request process, first thing: the function user's ids and no capability left.

    Also gives back the signal dispositions the snapshot process set aside: ignored
    signals would stay ignored across an exec.
    """
    for sig, handler in _saved_handlers.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
    _saved_handlers.clear()
    if _signaller is not None:
        _signaller.close()
        _forget_signaller()
    ident = _active
    if ident is None:
        return
    os.setgroups([])
    os.setresgid(ident.function_gid, ident.function_gid, ident.function_gid)
    os.setresuid(ident.function_uid, ident.function_uid, ident.function_uid)
    sysapi.clear_ambient_capabilities()
    sysapi.set_capabilities(0, 0, 0)
    _forget_identity()


def filter_program(ident: Identity, machine: str | None = None) -> bytes:
    """The seccomp filter that lets set*id calls take only the two users' ids."""
    return setid_filter.program(
        (ident.snapshot_uid, ident.function_uid),
        (ident.snapshot_gid, ident.function_gid),
        machine,
    )


def _start_signaller(ident: Identity) -> None:
    global _signaller
    _signaller = Signaller(ident.function_uid, lambda: _ignore_signals({}))


def private_fds() -> list[int]:
    """The snapshot process's own descriptors of the signaller (never a request's)."""
    return [_signaller.cmd_w, _signaller.rep_r] if _signaller is not None else []


def signaller_pid() -> int | None:
    """The signaller's pid (a child of the snapshot process that is no request's)."""
    return _signaller.pid if _signaller is not None else None


def send_signal(pids: Iterable[int], sig: int) -> None:
    """Signal request processes (and whatever they left) from wherever we stand.

    Directly when this process may (one identity, acting as the function user, a
    process still of the snapshot user), else through the signaller. Gone pids are skipped.
    """
    refused = send_direct(pids, sig)
    if not refused:
        return
    if _signaller is None:
        raise FailClosed(f"no permission to signal processes {refused}")
    _signaller.send(refused, sig)


def _forget_identity() -> None:
    global _active
    _active = None


def _forget_signaller() -> None:
    global _signaller
    _signaller = None


@contextmanager
def acting_as_function(children_too: bool = False) -> Iterator[None]:
    """Ids (B, B, A) for the duration: ptrace and /proc checks see the function user.

    Only while no request code runs: with ruid B, B's processes can signal this one.
    ``children_too`` (the inplace probe, before the checkpoint) takes (B, B, B) and
    dumpable, so that a child forked meanwhile can be ptraced like a worker.
    """
    ident = _active
    if ident is None:
        yield
        return
    uids, gids = os.getresuid(), os.getresgid()
    saved = ident.function_uid if children_too else ident.snapshot_uid
    os.setresgid(ident.function_gid, ident.function_gid, ident.function_gid)
    os.setresuid(ident.function_uid, ident.function_uid, saved)
    if children_too:
        sysapi.set_dumpable(True)
    try:
        yield
    finally:
        os.setresuid(*uids)
        os.setresgid(*gids)
        sysapi.set_dumpable(False)  # as any uid change leaves it (fs.suid_dumpable aside)


def freeze(worker: int, children: Callable[[], list[int]], timeout: float = 1.0) -> bool:
    """Stop the inplace worker and kill everything else a request left; False if it won't stop.

    Called before ``acting_as_function``, so that nothing of B's runs while this process
    has B's real uid. ``children`` lists candidates (our children and the worker's live
    ones); the worker and the signaller are spared. With one identity there is nothing
    to guard against: it does nothing.
    """
    if _active is None:
        return True
    send_signal([worker], signal.SIGSTOP)
    limit = time.monotonic() + timeout
    spins = 0
    while True:
        state = process_state(worker)
        if state in ("T", "t"):
            break
        if state in ("", "Z", "X") or time.monotonic() > limit:
            return False
        spins += 1
        if spins < 200:
            os.sched_yield()  # it stops within microseconds unless it is stuck
        else:
            time.sleep(0.0005)
    kill_leftovers(children, keep=worker)
    return True


def kill_leftovers(
    children: Callable[[], list[int]], keep: int | None = None, timeout: float = KILL_TIMEOUT_S
) -> int:
    """SIGKILL and reap what ``children`` lists but ``keep`` and the signaller, until none
    is left (grandchildren re-parent as their parents die); return how many were killed.

    Reaping is by pid: ``waitpid(-1)`` would also consume a ptrace stop of the kept
    process. Leftovers that outlive ``timeout`` fail closed.
    """
    killed = 0
    limit = time.monotonic() + timeout
    while True:
        pids = [p for p in children() if p not in (keep, signaller_pid())]
        if not pids:
            return killed
        if time.monotonic() > limit:
            raise FailClosed(f"processes {pids} left by a request could not be killed")
        send_signal(pids, signal.SIGKILL)
        killed += len(pids)
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.0005)


def thaw(worker: int) -> None:
    """After a rewind: let the worker out of the stop ``freeze`` put it in (detached)."""
    if _active is not None:
        os.kill(worker, signal.SIGCONT)


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ("" when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def live_children(pid: int) -> list[int]:
    """Children of a single-threaded process that are not zombies."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as fh:
            kids = [int(p) for p in fh.read().split()]
    except OSError:
        return []
    return [k for k in kids if process_state(k) not in ("Z", "X", "")]
