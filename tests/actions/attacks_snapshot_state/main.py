"""Attacks the snapshot process (its parent, or itself under `none`) and reports its own state.

``{"op": "observe"}`` returns this request process's limits, nice value, affinity,
scheduling policy, I/O priority, ids and capabilities. ``{"op": "attack", "target":
"parent"|"self", "how": [...]}`` tries each attack on the target and returns the errno
name (or "ok") of each.
"""

import ctypes
import errno
import functools
import json
import os
import resource
import signal
import time

_libc = ctypes.CDLL(None, use_errno=True)
SYS_IOPRIO_SET, SYS_IOPRIO_GET = 251, 252  # x86-64
IOPRIO_WHO_PROCESS = 1
IDLE_IOPRIO = 3 << 13  # IOPRIO_CLASS_IDLE, level 0


def _ioprio_set(pid, value):
    if _libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, pid, value) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _status():
    keep = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in keep:
                out[key] = val.split()
    return out


def _probe_import_privileges():
    """At import (the launcher: CAP_SETUID and CAP_SETGID under the seccomp filter), try
    what the capabilities would allow without the filter, in a throwaway child."""
    if os.getuid() == 0:
        return {}  # one identity as root: nothing to confine, and nothing to probe
    fn_uid = int(os.environ.get("REWIND_FUNCTION_IDS", "0:0").split(":")[0])
    fn_gid = int(os.environ.get("REWIND_FUNCTION_IDS", "0:0").split(":")[1])
    probes = {
        "setresuid_root": lambda: os.setresuid(0, 0, 0),
        "setuid_other": lambda: os.setuid(4242),
        "setgid_other": lambda: os.setgid(4242),
        "setgroups": lambda: os.setgroups([0]),
        "userns": lambda: _check(_libc.unshare(0x10000000)),
        "ambient_raise": lambda: _check(_libc.prctl(47, 2, 7, 0, 0)),
        "setresgid_function": lambda: os.setresgid(fn_gid, fn_gid, fn_gid),
        "setresuid_function": lambda: os.setresuid(fn_uid, fn_uid, fn_uid),
    }
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = {"CapEff": _status()["CapEff"][0]}
        for name, probe in probes.items():
            try:
                probe()
                out[name] = "ok"
            except OSError as exc:
                out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 4096)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _check(ret):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


IMPORT_PROBES = _probe_import_privileges()

ATTACKS = {
    "prlimit": lambda pid: resource.prlimit(pid, resource.RLIMIT_NOFILE, (40, 40)),
    "nice": lambda pid: os.setpriority(os.PRIO_PROCESS, pid, 19),
    "affinity": lambda pid: os.sched_setaffinity(pid, {min(os.sched_getaffinity(0))}),
    "sched": lambda pid: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)),
    "ioprio": lambda pid: _ioprio_set(pid, IDLE_IOPRIO),
    "stop": lambda pid: os.kill(pid, signal.SIGSTOP),
    "kill": lambda pid: os.kill(pid, signal.SIGKILL),
}
# Catchable signals whose default action ends or stops a process.
SHIELDED = ["SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXFSZ", "SIGTSTP"]
for _name in SHIELDED:
    ATTACKS[_name] = functools.partial(lambda sig, pid: os.kill(pid, sig), getattr(signal, _name))


def observe():
    return {
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "policy": os.sched_getscheduler(0),
        "ioprio": _libc.syscall(SYS_IOPRIO_GET, IOPRIO_WHO_PROCESS, 0),
        "status": _status(),
        "parent_uid": _parent_uid(),
        "parent_nice": _parent_nice(),
        "pid": os.getpid(),
        "import_probes": IMPORT_PROBES,
        "dispositions": {n: str(signal.getsignal(getattr(signal, n))) for n in SHIELDED},
    }


def _parent_uid():
    with open(f"/proc/{os.getppid()}/status") as fh:
        for line in fh:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:4]]
    return []


def _spin(target, seconds):
    """A leftover process that keeps trying every attack on the target until killed."""
    if os.fork() != 0:
        return
    if os.fork() != 0:
        os._exit(0)  # the grandchild is orphaned: it re-parents to the snapshot process
    end = time.time() + seconds
    while time.time() < end:
        for how in ("nice", "affinity", "sched", "ioprio", "prlimit", "stop"):
            try:
                ATTACKS[how](target)
            except OSError:
                pass
    os._exit(0)


def _parent_nice():
    with open(f"/proc/{os.getppid()}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])


def main(args):
    if args.get("op") == "spin":
        _spin(os.getppid(), float(args.get("seconds", 2)))
        return {"spinning": True}
    if args.get("op") != "attack":
        return observe()
    target = os.getpid() if args.get("target") == "self" else os.getppid()
    results = {}
    for how in args.get("how", []):
        try:
            ATTACKS[how](target)
            results[how] = "ok"
        except OSError as exc:
            results[how] = errno.errorcode.get(exc.errno, str(exc.errno))
    return {"target": target, "results": results}
