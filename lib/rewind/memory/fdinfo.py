"""What the kernel tells about a descriptor, and draining one unread (snapshot process).

``/proc/self/fdinfo`` and its fields (locks, epoll interest, timerfd and eventfd state),
the fcntl and ioctl queries the checkpoint and the rewind share, unix socket peers from
sock_diag, TCP segment counts, and discarding queued bytes inside the kernel (splice to
/dev/null, MSG_TRUNC) so that nothing a request wrote is read into this process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import re
import socket
import struct
import termios
from collections.abc import Callable
from typing import TypeVar

# fcntl commands Python's module names only in part (values from <linux/fcntl.h>).
F_SETOWN_EX, F_GETOWN_EX = 15, 16
OWNER = struct.Struct("ii")  # struct f_owner_ex {int type; pid_t pid;}
FLOCK = struct.Struct("hhqqi4x")  # struct flock on x86-64 (type, whence, start, len, pid)
EPOLL_EVENT = struct.Struct("=IQ")  # packed struct epoll_event on x86-64
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
MSG_TRUNC, MSG_DONTWAIT = 0x20, 0x40
TCP_INFO_LEN = 160
# Offsets in struct tcp_info (<linux/tcp.h>): data segments received and sent.
TCPI_DATA_SEGS_IN, TCPI_DATA_SEGS_OUT = 152, 156


_T = TypeVar("_T")

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.recv.restype = ctypes.c_ssize_t
libc.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def check_ret(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]


def raw_fdinfo(fd: int) -> bytes:
    info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = [os.read(info, 65536)]
        while parts[-1]:
            parts.append(os.read(info, 65536))
        return b"".join(parts)
    finally:
        os.close(info)


def fdinfo(fd: int) -> dict[str, list[str]]:
    """/proc/self/fdinfo/FD as {key: [values]} (keys such as "lock", "tfd", "inotify")."""
    text = raw_fdinfo(fd).decode("ascii", "replace")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("inotify wd:", "tfd:")):
            key, value = line.split(None, 1)[0].rstrip(":"), line
        elif ":" in line:
            key, value = line.split(":", 1)
        else:
            continue
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def fdinfo_fields(entry: str) -> dict[str, str]:
    """'wd:1 ino:3f mask:100' (or 'tfd:   5 events:  19 ...') as a dict."""
    return dict(re.findall(r"([\w-]+):\s*(\S+)", entry))


def lock_key(line: str) -> tuple[str, str, str, str]:
    """A lock line of fdinfo without its index and owner pid: (class, type, start, end)."""
    f = line.split()
    # "1: FLOCK ADVISORY WRITE 1234 fe:00:99 0 EOF"
    return (f[1], f[3], f[6], f[7]) if len(f) >= 8 else (line, "", "", "")


def fionread(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def pipe_capacity(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def or_none(call: Callable[..., _T], *args: int) -> _T | None:
    try:
        return call(*args)
    except OSError:
        return None


def get_owner(fd: int) -> tuple[int, int]:
    return OWNER.unpack(fcntl.fcntl(fd, F_GETOWN_EX, bytes(OWNER.size)))  # type: ignore[return-value]


def splice_to_null(fd: int, limit: int, is_pipe: bool) -> None:
    """Discard up to ``limit`` queued bytes of ``fd`` inside the kernel (no copy here)."""
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    scratch: tuple[int, int] | None = None if is_pipe else os.pipe()
    try:
        left = limit
        while left > 0:
            try:
                if scratch is None:
                    moved = os.splice(fd, null, left, flags=os.SPLICE_F_NONBLOCK)
                else:
                    moved = os.splice(fd, scratch[1], min(left, 65536), flags=os.SPLICE_F_NONBLOCK)
                    if moved:
                        os.splice(scratch[0], null, moved)
            except BlockingIOError:
                return
            if moved <= 0:
                return
            left -= moved
    finally:
        os.close(null)
        if scratch is not None:
            os.close(scratch[0])
            os.close(scratch[1])


def discard_datagrams(fd: int) -> None:
    """Drop every queued datagram (MSG_TRUNC with no buffer: nothing is copied)."""
    for _ in range(1 << 16):
        if libc.recv(fd, None, 0, MSG_TRUNC | MSG_DONTWAIT) < 0:
            return


def discard_stream(fd: int, queued: int) -> None:
    """Drop a stream socket's queued bytes without copying them here."""
    if queued <= 0:
        return
    if libc.recv(fd, None, queued, MSG_TRUNC | MSG_DONTWAIT) >= 0:
        return  # TCP discards with MSG_TRUNC
    splice_to_null(fd, queued, is_pipe=False)  # unix stream: through a pipe


NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR = 1, 0x300, 3, 2
UDIAG_SHOW_PEER, UNIX_DIAG_PEER = 0x4, 2


def unix_peers() -> dict[int, int]:
    """Every unix socket's peer in this network namespace: {inode: peer inode}."""
    nl = socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
    )
    peers: dict[int, int] = {}
    try:
        req = struct.pack("BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_PEER, 0, 0)
        nl.send(
            struct.pack(
                "IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
            )
            + req
        )
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("IH", data, off)
                if kind in (NLMSG_DONE, NLMSG_ERROR) or length < 16:
                    return peers
                ino = struct.unpack_from("I", data, off + 20)[0]
                attr = off + 16 + 16
                while attr + 4 <= off + length:
                    alen, atype = struct.unpack_from("HH", data, attr)
                    if alen < 4:
                        break
                    if atype == UNIX_DIAG_PEER:
                        peers[ino] = struct.unpack_from("I", data, attr + 4)[0]
                    attr += (alen + 3) & ~3
                off += (length + 3) & ~3
    finally:
        nl.close()


def tcp_data_segs(sock: socket.socket) -> tuple[int, int]:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    if len(info) < TCPI_DATA_SEGS_OUT + 4:
        return (-1, -1)
    segs_in = struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]
    segs_out = struct.unpack_from("I", info, TCPI_DATA_SEGS_OUT)[0]
    return (int(segs_in), int(segs_out))


def tcp_data_segs_fd(fd: int) -> tuple[int, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return tcp_data_segs(sock)
    finally:
        sock.close()


def epoll_interest(f: dict[str, str]) -> tuple[str, str]:
    return (f.get("events", ""), f.get("data", ""))


def epoll_entry_key(entry: str) -> tuple[str, str, str]:
    f = fdinfo_fields(entry)
    return (f.get("tfd", ""), f.get("ino", ""), f.get("sdev", ""))
