"""Every place the function user can write, found at run time (sidecar process, root).

Walks every writable mount of this mount namespace (``/proc/self/mountinfo``) with GNU
find run as the function user (its uid, gid and groups), so the kernel's own permission
check (``access(2)``: mode bits, ACLs, read-only mounts) decides, at C speed. Directories
the user may traverse but not read (names it could still guess) are listed as root and
their entries walked as the user again. A directory counts when the user can
create entries in it or owns it (an owner can chmod it writable); so does a regular file
outside such directories. The walk does not enter a writable directory: the local driver
rewinds it whole. Pseudo filesystems (``/proc``, ``/sys``, cgroups, devpts, mqueue, which
the IPC reset covers) and device nodes are skipped: writing ``/dev/null`` is not state.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: Filesystems whose files are not storage a request could leave data in (or, for
#: mqueue, are reset by the IPC namespace reset instead).
PSEUDO_FS = frozenset(
    {
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
        "tracefs", "bpf", "configfs", "fusectl", "pstore", "binfmt_misc", "autofs", "nsfs",
        "efivarfs", "selinuxfs", "rpc_pipefs",
    }
)  # fmt: skip
SKIPPED_TREES = ("/proc", "/sys")
FIND = shutil.which("find") or "/usr/bin/find"
#: Who the walk runs as when the function runs as root: root writes everywhere, so the
#: places every user can write (the overflow uid, no groups) are rewound.
NOBODY = 65534


@dataclass(frozen=True)
class WritableSet:
    """Directories and single files the user can change; ``ms`` is the walk's cost."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]
    ms: float
    uid: int


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[list[str], list[str]]:
    """(mount points of read-write storage filesystems outside /proc and /sys, mount
    points of everything else: pseudo filesystems and read-only mounts)."""
    points: list[str] = []
    others: list[str] = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            pre, _, post = line.partition(" - ")
            fields, sfields = pre.split(), post.split()
            point = _unescape(fields[4])
            if (
                "rw" not in fields[5].split(",")
                or len(sfields) < 3
                or sfields[0] in PSEUDO_FS
                or "ro" in sfields[2].split(",")
                or _under(point, SKIPPED_TREES)
            ):
                others.append(point)
            else:
                points.append(point)
    # A mount point seen again later was mounted over: the last mount is the one in use.
    return sorted(set(points) - set(others)), sorted(set(others))


def resolve_user(user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) of the function user; root becomes the overflow user."""
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return NOBODY, NOBODY, []
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


def _under(path: str, tops: Iterable[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


def _find_as(
    uid: int, gid: int, groups: list[int], starts: list[str], skip: tuple[str, ...]
) -> str:
    """Run GNU find over ``starts`` as the user (real ids: find's -writable is access(2)).

    Prints, NUL-separated: ``d`` + a directory the user can write or owns (not entered),
    ``f`` + such a regular file, ``u`` + a directory the user may traverse but not list.
    Directories the user cannot traverse are not entered (find's errors are dropped).
    """
    prune: list[str] = []
    for path in skip:
        prune += [*(["-o"] if prune else []), "-path", path]
    user = str(uid)
    expr = [
        *(["(", *prune, ")", "-prune", "-o"] if prune else []),
        "-type", "d", "(", "-user", user, "-o", "-writable", ")", "-printf", "d%p\\0", "-prune",
        "-o", "-type", "d", "!", "-readable", "-executable", "-printf", "u%p\\0", "-prune",
        # Only ownership or a group/other write bit (an ACL's mask shows as the group
        # bits) can give the user a file: the cheap mode test runs before access(2).
        "-o", "-type", "f", "(", "-user", user, "-o", "(", "-perm", "/022", "-writable", ")",
        ")", "-printf", "f%p\\0",
    ]  # fmt: skip
    # subprocess drops to the user in its C child code: safe in the threaded sidecar.
    proc = subprocess.run(
        [FIND, "-P", *starts, "-xdev", *expr],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd="/",
        user=uid,
        group=gid,
        extra_groups=groups,
        check=False,
    )
    # find exits 1 when some directory could not be read: expected on most systems.
    if proc.returncode not in (0, 1):
        raise OSError(f"{FIND} as uid {uid} failed (exit status {proc.returncode})")
    return proc.stdout.decode("utf-8", "surrogateescape")


def find_writable(
    user: str, skip: Iterable[str] = (), tops: list[str] | None = None
) -> WritableSet:
    """Every directory and file ``user`` (a name or uid) can change; root is walked as
    nobody. ``skip`` lists trees never entered (the sidecar's snapshot dir). Runs as root.

    Directories the user may traverse but not list are listed here, as root, and their
    entries walked as the user again: the user can open names it guesses.
    """
    uid, gid, groups = resolve_user(user)
    skip_t = tuple(os.path.realpath(p) for p in skip)
    start = time.perf_counter()
    dirs: set[str] = set()
    files: set[str] = set()
    starts, others = mounts()
    if tops is not None:  # tests: these trees instead of every mount
        starts = tops
    # find evaluates the mount points below a start point (without entering them): drop
    # those of pseudo filesystems (/dev/mqueue is reset with the IPC namespace instead)
    # and read-only mounts.
    excluded = set(others)
    seen: set[str] = set()
    while starts:
        unlisted: list[str] = []
        for item in _find_as(uid, gid, groups, starts, skip_t).split("\0"):
            kind, path = item[:1], item[1:]
            if kind == "d":
                dirs.add(path)
            elif kind == "f":
                files.add(path)
            elif kind == "u" and path not in seen:
                seen.add(path)
                unlisted.append(path)
        starts = []
        for path in unlisted:
            try:
                starts += [os.path.join(path, name) for name in sorted(os.listdir(path))]
            except OSError:
                continue
    ms = (time.perf_counter() - start) * 1000
    kept = tuple(sorted(dirs - excluded))
    single = tuple(sorted(f for f in files - excluded if not _under(f, kept)))
    return WritableSet(dirs=kept, files=single, ms=ms, uid=uid)
