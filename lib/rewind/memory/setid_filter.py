"""The seccomp filter that confines CAP_SETUID and CAP_SETGID to two users (any process).

With CAP_SETUID a process may take any uid, root's included. The launcher holds it (the
snapshot process must switch between the snapshot user and the function user, and fork
request processes that become the function user), and it runs the action's import code,
so before that code runs it installs this filter, inherited by every process it starts:

- setuid, setreuid, setresuid, setfsuid: only the two users' uids (or -1, "unchanged");
  setgid and the rest likewise with their groups; setgroups only with an empty list;
- clone and unshare with CLONE_NEWUSER fail: in a new user namespace CAP_SETUID would let
  a uid_map map root; clone3 fails with ENOSYS (its flags are behind a pointer), so libc
  falls back to clone;
- prctl(PR_CAP_AMBIENT_RAISE) fails: no program it execs gets a capability back;
- another ABI (i386, x32) is refused, since its system call numbers differ.
"""

from __future__ import annotations

import platform
import struct

from rewind.memory import sysapi
from rewind.request.errors import FailClosed

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO, _KILL = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_CLONE_NEWUSER = 0x10000000
_NO_ID = 0xFFFFFFFF  # -1: "leave this id unchanged"

# (audit arch, syscall numbers) per machine; anything else fails closed.
_ARCHES = {
    "x86_64": (
        0xC000003E,
        dict(
            setuid=105, setgid=106, setreuid=113, setregid=114, setgroups=116,
            setresuid=117, setresgid=119, setfsuid=122, setfsgid=123, unshare=272,
            clone=56, clone3=435, prctl=157,
        ),
    ),
    "aarch64": (
        0xC00000B7,
        dict(
            setuid=146, setgid=144, setreuid=145, setregid=143, setgroups=159,
            setresuid=147, setresgid=149, setfsuid=151, setfsgid=152, unshare=97,
            clone=220, clone3=435, prctl=167,
        ),
    ),
}  # fmt: skip


class Program:
    """A classic-BPF program with symbolic jump targets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | None, str | None, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def load(self, offset: int) -> None:
        self.code.append((_LD_ABS, None, None, offset))

    def jump(self, op: int, k: int, true: str | None, false: str | None = None) -> None:
        self.code.append((op, true, false, k))

    def ret(self, k: int) -> None:
        self.code.append((_RET, None, None, k))

    def assemble(self) -> bytes:
        out = b""
        for i, (op, jt, jf, k) in enumerate(self.code):
            rel = [0 if t is None else self.labels[t] - i - 1 for t in (jt, jf)]
            if not all(0 <= r <= 255 for r in rel):
                raise ValueError("BPF jump out of range")
            out += struct.pack("=HBBI", op, rel[0], rel[1], k & 0xFFFFFFFF)
        return out


def _arg(i: int) -> int:
    return 16 + 8 * i  # seccomp_data.args[i], low 32 bits (little-endian): a uid_t


def program(uids: tuple[int, int], gids: tuple[int, int], machine: str | None = None) -> bytes:
    """The filter for this machine: set*uid only to ``uids``, set*gid only to ``gids``."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise FailClosed(f"no seccomp filter for {machine}: cannot confine CAP_SETUID")
    arch, nr = _ARCHES[machine]
    allowed_uids, allowed_gids = (*uids, _NO_ID), (*gids, _NO_ID)
    p = Program()
    p.load(4)
    p.jump(_JEQ, arch, None, "kill")  # another ABI (i386, x32's own arch) would dodge us
    p.load(0)
    if machine == "x86_64":
        p.jump(_JGE, 0x40000000, "enosys")  # x32 system calls
    for name, target in (
        ("setuid", "u1"), ("setfsuid", "u1"), ("setreuid", "u2"), ("setresuid", "u3"),
        ("setgid", "g1"), ("setfsgid", "g1"), ("setregid", "g2"), ("setresgid", "g3"),
        ("setgroups", "groups"), ("unshare", "ns"), ("clone", "ns"), ("clone3", "enosys"),
        ("prctl", "prctl"),
    ):  # fmt: skip
        p.jump(_JEQ, nr[name], target)
    p.ret(_ALLOW)
    for kind, ids in (("u", allowed_uids), ("g", allowed_gids)):
        for n in (3, 2, 1):
            p.label(f"{kind}{n}")
            p.load(_arg(n - 1))
            nxt = f"{kind}{n - 1}" if n > 1 else "allow"
            for v in ids:
                p.jump(_JEQ, v, nxt)
            p.ret(_ERRNO | _EPERM)
    p.label("groups")
    p.load(_arg(0))
    p.jump(_JEQ, 0, "allow", "eperm")
    p.label("ns")
    p.load(_arg(0))
    p.jump(_JSET, _CLONE_NEWUSER, "eperm", "allow")
    p.label("prctl")
    p.load(_arg(0))
    p.jump(_JEQ, sysapi.PR_CAP_AMBIENT, None, "allow")
    p.load(_arg(1))
    p.jump(_JEQ, sysapi.PR_CAP_AMBIENT_RAISE, "eperm", "allow")
    p.label("allow")
    p.ret(_ALLOW)
    p.label("eperm")
    p.ret(_ERRNO | _EPERM)
    p.label("enosys")
    p.ret(_ERRNO | _ENOSYS)
    p.label("kill")
    p.ret(_KILL)
    return p.assemble()
