"""Descriptors open at the checkpoint, shared by every request process (snapshot process).

A request process is forked from the snapshot process (fork, and the inplace worker),
so each descriptor open at the checkpoint refers to an open file description it
shares with the snapshot process and with every later request. What lives in the
description, not in the process, outlives the request: the file offset, the status
flags, F_SETSIG and F_SETOWN, flock and OFD locks, a pipe's size and contents, a
socket's receive queue and connection, an eventfd's counter, a timerfd's setting, an
epoll interest list, inotify watches, a signalfd's mask, and the content of a file no
path reaches (a memfd, an unlinked file, or a file the file sidecar replaced).

``SharedDescriptors.take`` records all of that for the snapshot process's own
descriptors at the checkpoint; ``rewind`` puts it back after every request, once the
request's processes are dead or stopped. Nothing a request wrote is ever read into
this process: pipes drain to /dev/null with splice, sockets discard with MSG_TRUNC.
What cannot be put back is made to behave as closed (a connection is shut down, so
later requests see EOF and reconnect) or, when even that is impossible, the rewind
fails closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import select
import socket
import stat
import struct
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from rewind.launcher.errors import FailClosed

# fcntl commands Python's module names only in part (values from <linux/fcntl.h>).
F_SETOWN_EX, F_GETOWN_EX = 15, 16
_OWNER = struct.Struct("ii")  # struct f_owner_ex {int type; pid_t pid;}
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on x86-64 (type, whence, start, len, pid)
_EPOLL_EVENT = struct.Struct("=IQ")  # packed struct epoll_event on x86-64
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
MSG_TRUNC, MSG_DONTWAIT = 0x20, 0x40
TCP_INFO_LEN = 160
# Offsets in struct tcp_info (<linux/tcp.h>): data segments received and sent.
TCPI_DATA_SEGS_IN, TCPI_DATA_SEGS_OUT = 152, 156
# A pipe's contents at the checkpoint are kept (they are import-time data) up to this.
MAX_SAVED_PIPE = 1 << 20
# Content of a file no path reaches is kept to restore it, up to this per file.
MAX_SAVED_FILE = 64 << 20
# How long a pipe may stay too full to be shrunk back (the proxy drains stdout).
PIPE_RESIZE_WAIT_S = 1.0
MAX_SEMAPHORE_READS = 1 << 16

_T = TypeVar("_T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.recv.restype = ctypes.c_ssize_t
_libc.recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


def _raw_fdinfo(fd: int) -> bytes:
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
    text = _raw_fdinfo(fd).decode("ascii", "replace")
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


def _fields(entry: str) -> dict[str, str]:
    """'wd:1 ino:3f mask:100' (or 'tfd:   5 events:  19 ...') as a dict."""
    return dict(re.findall(r"([\w-]+):\s*(\S+)", entry))


def _lock_key(line: str) -> tuple[str, str, str, str]:
    """A lock line of fdinfo without its index and owner pid: (class, type, start, end)."""
    f = line.split()
    # "1: FLOCK ADVISORY WRITE 1234 fe:00:99 0 EOF"
    return (f[1], f[3], f[6], f[7]) if len(f) >= 8 else (line, "", "", "")


def _fionread(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def _pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _or_none(call: Callable[..., _T], *args: int) -> _T | None:
    try:
        return call(*args)
    except OSError:
        return None


def _owner(fd: int) -> tuple[int, int]:
    return _OWNER.unpack(fcntl.fcntl(fd, F_GETOWN_EX, bytes(_OWNER.size)))  # type: ignore[return-value]


def _splice_all_to_null(fd: int, limit: int, is_pipe: bool) -> None:
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


def _discard_datagrams(fd: int) -> None:
    """Drop every queued datagram (MSG_TRUNC with no buffer: nothing is copied)."""
    for _ in range(1 << 16):
        if _libc.recv(fd, None, 0, MSG_TRUNC | MSG_DONTWAIT) < 0:
            return


def _discard_stream(fd: int, queued: int) -> None:
    """Drop a stream socket's queued bytes without copying them here."""
    if queued <= 0:
        return
    if _libc.recv(fd, None, queued, MSG_TRUNC | MSG_DONTWAIT) >= 0:
        return  # TCP discards with MSG_TRUNC
    _splice_all_to_null(fd, queued, is_pipe=False)  # unix stream: through a pipe


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


@dataclass
class SockState:
    """What the checkpoint knew of a socket."""

    family: int
    type: int
    listening: bool
    peer: str  # "" when not connected
    tcp_segs: tuple[int, int] | None = None  # (data segments in, out), TCP only
    peer_ino: int = 0  # a unix socket's peer


@dataclass
class Saved:
    """One descriptor as the checkpoint left it."""

    fd: int
    kind: str  # file dir pipe socket eventfd timerfd epoll inotify signalfd other
    target: str
    dev: int
    ino: int
    flags: int
    sig: int | None  # None where fcntl refuses (O_PATH)
    owner: tuple[int, int] | None
    offset: int | None = None
    pipe_size: int | None = None
    queued: int = 0
    lease: int | None = None
    locks: list[tuple[str, str, str, str]] = field(default_factory=list)
    sock: SockState | None = None
    info: dict[str, list[str]] = field(default_factory=dict)  # fdinfo of anon inodes
    content: bytes | None = None  # a pipe's queued bytes, or a pathless file's content
    source: str = ""  # the path the file rewind restores this orphaned file's content at
    ctime: int = 0  # of a pathless file, after its last restore
    nlink: int = 1
    stdio: bool = False  # 0, 1, 2: shared with the proxy; never drained or shut
    closed: bool = False  # shut down already; later requests see EOF
    unrestorable: str = ""  # why this one cannot be put back if it changes


def _kind(target: str, mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    for name in ("eventfd", "timerfd", "eventpoll", "inotify", "signalfd"):
        if target.startswith("anon_inode:") and name in target:
            return "epoll" if name == "eventpoll" else name
    return "other"


def _sock_state(fd: int) -> SockState:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        fam, typ = sock.family, sock.type
        listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        try:
            peer = sock.getpeername()
            peer_s = str(peer) if peer not in ("", b"", None) else "unnamed"
        except OSError:
            peer_s = ""
        segs = None
        if fam in (socket.AF_INET, socket.AF_INET6) and typ == socket.SOCK_STREAM:
            segs = _tcp_segs(sock)
        return SockState(int(fam), int(typ), listening, peer_s, segs)
    finally:
        sock.close()


def _tcp_segs(sock: socket.socket) -> tuple[int, int]:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    if len(info) < TCPI_DATA_SEGS_OUT + 4:
        return (-1, -1)
    segs_in = struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]
    segs_out = struct.unpack_from("I", info, TCPI_DATA_SEGS_OUT)[0]
    return (int(segs_in), int(segs_out))


def _tcp_segs_fd(fd: int) -> tuple[int, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return _tcp_segs(sock)
    finally:
        sock.close()


def _save(fd: int) -> Saved | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None  # gone already (the listing's own descriptor)
    kind = _kind(target, st.st_mode)
    s = Saved(
        fd=fd,
        kind=kind,
        target=target,
        dev=st.st_dev,
        ino=st.st_ino,
        flags=flags,
        sig=_or_none(fcntl.fcntl, fd, fcntl.F_GETSIG),
        owner=_or_none(_owner, fd),
        stdio=fd <= 2,
        nlink=st.st_nlink,
    )
    # Not for stdio: a log file there is the proxy's too, and moving its offset back
    # would write the next request's output over this one's.
    if kind in ("file", "dir", "other") and not s.stdio:
        try:
            s.offset = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            s.offset = None
    if kind == "pipe":
        s.pipe_size = _pipe_size(fd)
        s.queued = _fionread(fd)
        if s.queued and not s.stdio and flags & os.O_ACCMODE != os.O_WRONLY:
            _save_pipe_content(s)
    if kind in ("file", "dir"):
        s.locks = [_lock_key(x) for x in fdinfo(fd).get("lock", [])]
    if kind == "file":
        try:
            s.lease = fcntl.fcntl(fd, fcntl.F_GETLEASE)
        except OSError:
            s.lease = None
        if st.st_nlink == 0 and not s.stdio:
            _save_file_content(s, st)
    if kind == "socket":
        s.sock = _sock_state(fd)
        if not s.sock.listening:
            s.queued = _fionread(fd)
    if kind in ("eventfd", "timerfd", "epoll", "inotify", "signalfd"):
        s.info = fdinfo(fd)
        if kind == "inotify":
            s.queued = _fionread(fd)
    return s


def _save_pipe_content(s: Saved) -> None:
    """Keep the bytes queued at the checkpoint (import-time data) to put back each time."""
    if s.queued > MAX_SAVED_PIPE:
        s.unrestorable = f"it held {s.queued} bytes at the checkpoint"
        return
    data = b""
    while len(data) < s.queued:
        chunk = os.read(s.fd, s.queued - len(data))
        if not chunk:
            break
        data += chunk
    s.content = data
    _refill_pipe(s)


def _refill_pipe(s: Saved) -> None:
    if not s.content:
        return
    w = os.open(f"/proc/self/fd/{s.fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        view = memoryview(s.content)
        while view:
            view = view[os.write(w, view) :]
    finally:
        os.close(w)


def _save_file_content(s: Saved, st: os.stat_result) -> None:
    """Keep a pathless file's content (written at import: not request data)."""
    s.ctime = st.st_ctime_ns
    try:
        seals = fcntl.fcntl(s.fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW:
        return  # nothing can change it
    if st.st_size > MAX_SAVED_FILE:
        s.unrestorable = f"a file no path reaches holds {st.st_size} bytes"
        return
    if s.flags & os.O_ACCMODE == os.O_WRONLY:
        fd = os.open(f"/proc/self/fd/{s.fd}", os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.dup(s.fd)
    try:
        parts, off = [], 0
        while off < st.st_size:
            chunk = os.pread(fd, st.st_size - off, off)
            if not chunk:
                break
            parts.append(chunk)
            off += len(chunk)
    finally:
        os.close(fd)
    s.content = b"".join(parts)
    s.ctime = os.fstat(s.fd).st_ctime_ns


def _copy_in_kernel(path: str, dst: int) -> None:
    """Make ``dst`` a copy of the file at ``path`` with sendfile (no bytes pass here)."""
    try:
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise FailClosed(f"{path}: the restored file is not there ({exc.strerror})") from None
    try:
        size = os.fstat(src).st_size
        os.ftruncate(dst, size)
        off = 0
        while off < size:
            sent = os.sendfile(dst, src, off, size - off)
            if sent <= 0:
                raise OSError(errno.EIO, "sendfile made no progress")
            off += sent
    finally:
        os.close(src)


def own_descriptors() -> list[int]:
    """The descriptor numbers this process has open now."""
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))


class SharedDescriptors:
    """The checkpoint's descriptors and their restore after every request."""

    def __init__(
        self,
        saved: list[Saved],
        log: Callable[[str], None] | None = None,
        files_rewound: bool = True,
    ) -> None:
        self.saved = saved
        self.log = log
        # Only when the file rewind restores paths is a path's content the checkpoint's.
        self.files_rewound = files_rewound
        self._socket_inodes = {s.ino for s in saved if s.kind == "socket"}

    @classmethod
    def take(
        cls,
        skip: Iterable[int],
        log: Callable[[str], None] | None = None,
        files_rewound: bool = True,
    ) -> SharedDescriptors:
        """Record this process's descriptors, except the runtime's own ``skip`` ones."""
        skipped = set(skip)
        saved = []
        for fd in own_descriptors():
            if fd in skipped:
                continue
            try:
                found_one = _save(fd)
            except Exception as exc:  # noqa: BLE001 -- one we cannot record: fail closed
                raise FailClosed(f"descriptor {fd} open at the checkpoint: {exc!r}") from None
            if found_one is not None:
                saved.append(found_one)
        unix = [s.sock for s in saved if s.sock is not None and s.sock.family == socket.AF_UNIX]
        if any(u.peer for u in unix):
            peers = unix_peers()
            for s in saved:
                if s.sock is not None and s.sock.family == socket.AF_UNIX:
                    s.sock.peer_ino = peers.get(s.ino, 0)
        found = cls(saved, log, files_rewound)
        if log is not None:
            for s in saved:
                sk = s.sock
                if sk is None or not sk.peer or s.stdio or sk.type == socket.SOCK_DGRAM:
                    continue
                if sk.peer_ino in found._socket_inodes:
                    log(f"descriptor {s.fd}: one end of a socketpair held here; drained")
                elif sk.tcp_segs is not None:
                    log(
                        f"descriptor {s.fd} is a connection to {sk.peer}: it is shut down "
                        "after a request that sends or receives on it, or leaves data in it"
                    )
                else:
                    log(
                        f"descriptor {s.fd} is a connection to {sk.peer!r}: a request's use "
                        "of it cannot be observed, so it is shut down after the first request"
                    )
            for s in saved:
                if s.unrestorable:
                    log(f"descriptor {s.fd} ({s.target}): {s.unrestorable}")
        return found

    def fds(self) -> list[int]:
        return [s.fd for s in self.saved]

    # -- after every request -------------------------------------------------------

    def rewind(self, clean: bool) -> list[str]:
        """Put every description back as the checkpoint left it; return what was done.

        ``clean`` is False after a request that timed out or whose process crashed:
        then any connection it may have used is shut down. Raises FailClosed when a
        description can be neither restored nor made to behave as closed.
        """
        notes: list[str] = []
        for s in self.saved:
            try:
                self._rewind_one(s, clean, notes)
            except FailClosed:
                raise
            except Exception as exc:  # noqa: BLE001 -- anything unexpected fails closed
                raise FailClosed(f"descriptor {s.fd} ({s.target}): {exc!r}") from None
        return notes

    def _rewind_one(self, s: Saved, clean: bool, notes: list[str]) -> None:
        if s.kind == "file" and not s.stdio:
            if s.nlink == 0 or s.content is not None:
                self._restore_content(s, notes)
            else:
                self._check_orphaned(s, notes)
        if s.kind == "pipe" and not s.stdio:
            self._rewind_pipe(s, notes)
        elif s.kind == "socket" and not s.stdio:
            self._rewind_socket(s, clean, notes)
        elif s.kind == "eventfd":
            self._rewind_eventfd(s, notes)
        elif s.kind == "timerfd":
            self._rewind_timerfd(s, notes)
        elif s.kind == "signalfd":
            self._rewind_signalfd(s, notes)
        elif s.kind == "epoll":
            self._rewind_epoll(s, notes)
        elif s.kind == "inotify":
            self._rewind_inotify(s, notes)
        if s.kind in ("file", "dir"):
            self._rewind_locks(s, notes)
        if s.lease is not None and fcntl.fcntl(s.fd, fcntl.F_GETLEASE) != s.lease:
            fcntl.fcntl(s.fd, fcntl.F_SETLEASE, s.lease)
            notes.append(f"descriptor {s.fd}: lease put back")
        if s.offset is not None and os.lseek(s.fd, 0, os.SEEK_CUR) != s.offset:
            os.lseek(s.fd, s.offset, os.SEEK_SET)
        if s.pipe_size is not None and _pipe_size(s.fd) != s.pipe_size:
            self._resize_pipe(s, notes)
        if s.sig is not None and fcntl.fcntl(s.fd, fcntl.F_GETSIG) != s.sig:
            fcntl.fcntl(s.fd, fcntl.F_SETSIG, s.sig)
            notes.append(f"descriptor {s.fd}: F_SETSIG put back")
        if s.owner is not None and _owner(s.fd) != s.owner:
            fcntl.fcntl(s.fd, F_SETOWN_EX, _OWNER.pack(*s.owner))
            notes.append(f"descriptor {s.fd}: F_SETOWN put back")
        # Last: the steps above may have switched O_NONBLOCK on to drain.
        if fcntl.fcntl(s.fd, fcntl.F_GETFL) != s.flags:
            fcntl.fcntl(s.fd, fcntl.F_SETFL, s.flags)
            if fcntl.fcntl(s.fd, fcntl.F_GETFL) != s.flags:
                raise FailClosed(f"descriptor {s.fd}: its status flags cannot be put back")

    # files

    def _restore_content(self, s: Saved, notes: list[str]) -> None:
        st = os.fstat(s.fd)
        if st.st_ctime_ns == s.ctime:
            return
        if s.content is None and not s.source:
            raise FailClosed(f"descriptor {s.fd} ({s.target}) was written and {s.unrestorable}")
        w = os.open(f"/proc/self/fd/{s.fd}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            if s.content is not None:
                os.ftruncate(w, len(s.content))
                view, off = memoryview(s.content), 0
                while off < len(view):
                    off += os.pwrite(w, view[off:], off)
            else:
                _copy_in_kernel(s.source, w)
        finally:
            os.close(w)
        s.ctime = os.fstat(s.fd).st_ctime_ns
        notes.append(f"descriptor {s.fd} ({s.target}): content no path reaches put back")

    def _check_orphaned(self, s: Saved, notes: list[str]) -> None:
        """The file rewind restores a changed file by renaming a fresh copy over it,
        which leaves our descriptor on the old, written inode: that inode gets the
        restored content (copied in the kernel, never through this process), now and
        after every later request that changes it."""
        if not self.files_rewound or os.fstat(s.fd).st_nlink != 0:
            return
        s.source, s.nlink, s.ctime = s.target.removesuffix(" (deleted)"), 0, 0
        notes.append(f"descriptor {s.fd} ({s.source}): its file was replaced by the file rewind")
        self._restore_content(s, notes)

    def _rewind_locks(self, s: Saved, notes: list[str]) -> None:
        # fdinfo, not /proc/locks: that hides a lock whose owner (a request process that
        # took a flock) has exited, and the lock lives on in the description.
        if not s.locks and b"\nlock:" not in _raw_fdinfo(s.fd):
            return  # the common case, without parsing
        now = [_lock_key(x) for x in fdinfo(s.fd).get("lock", [])]
        if sorted(now) == sorted(s.locks):
            return
        fcntl.flock(s.fd, fcntl.LOCK_UN)
        fcntl.fcntl(s.fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, 0, 0, 0, 0))
        for cls, typ, start, end in s.locks:
            if cls == "FLOCK":
                op = fcntl.LOCK_EX if typ == "WRITE" else fcntl.LOCK_SH
                fcntl.flock(s.fd, op | fcntl.LOCK_NB)
            elif cls == "OFDLCK":
                length = 0 if end == "EOF" else int(end) - int(start) + 1
                ltype = fcntl.F_WRLCK if typ == "WRITE" else fcntl.F_RDLCK
                fcntl.fcntl(s.fd, fcntl.F_OFD_SETLK, _FLOCK.pack(ltype, 0, int(start), length, 0))
        notes.append(f"descriptor {s.fd}: locks put back")

    # pipes and sockets

    def _rewind_pipe(self, s: Saved, notes: list[str]) -> None:
        if s.flags & os.O_ACCMODE == os.O_WRONLY:
            return  # its read end is someone else's (or listed on its own)
        queued = _fionread(s.fd)
        if s.content is not None:
            _splice_all_to_null(s.fd, queued, is_pipe=True)
            _refill_pipe(s)
            return
        if s.unrestorable and queued != s.queued:
            raise FailClosed(f"descriptor {s.fd} ({s.target}): {s.unrestorable}")
        if queued > s.queued:
            _splice_all_to_null(s.fd, queued - s.queued, is_pipe=True)
            notes.append(f"descriptor {s.fd} ({s.target}): {queued} unread bytes discarded")

    def _rewind_socket(self, s: Saved, clean: bool, notes: list[str]) -> None:
        sk = s.sock
        assert sk is not None
        if sk.listening:
            self._refuse_pending(s, notes)
            return
        if sk.type == socket.SOCK_DGRAM:
            queued = _fionread(s.fd)
            if queued and queued != s.queued:
                _discard_datagrams(s.fd)
                if s.queued:
                    self._shut(s, "its queued datagrams changed", notes)
            return
        if s.closed or not sk.peer:
            return
        queued = _fionread(s.fd)
        why = ""
        if queued != s.queued and sk.peer_ino not in self._socket_inodes:
            why = f"it holds {queued} unread bytes"
        elif sk.tcp_segs is not None:
            segs = _tcp_segs_fd(s.fd)
            if segs != sk.tcp_segs:
                why = "the request used it (a reply may still be on its way)"
        elif sk.peer_ino in self._socket_inodes:
            # A socketpair both of whose ends we hold: every writer is gone by now.
            if s.queued == 0:
                if queued:
                    _discard_stream(s.fd, queued)
                return
            why = "the checkpoint's unread bytes were read"
        else:
            why = "a request's use of it cannot be observed"
        if not why and not clean:
            why = "the request timed out or crashed"
        if why:
            self._shut(s, why, notes)

    def _shut(self, s: Saved, why: str, notes: list[str]) -> None:
        """Make a connection behave as closed: EOF for readers, EPIPE for writers, and a
        reset for whatever the peer still sends."""
        try:
            sock = socket.socket(fileno=os.dup(s.fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
        if s.sock is not None and s.sock.type == socket.SOCK_DGRAM:
            _discard_datagrams(s.fd)
        else:
            _discard_stream(s.fd, _fionread(s.fd))
        s.closed = True
        notes.append(f"descriptor {s.fd} ({s.sock.peer if s.sock else s.target}) shut down: {why}")

    def _refuse_pending(self, s: Saved, notes: list[str]) -> None:
        """Accept and close connections a request left pending on a listening socket."""
        poller = select.poll()
        poller.register(s.fd, select.POLLIN)
        if not poller.poll(0):
            return
        sock = socket.socket(fileno=os.dup(s.fd))
        try:
            sock.setblocking(False)
            n = 0
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                conn.close()
                n += 1
        finally:
            sock.close()
        if n:
            notes.append(f"descriptor {s.fd}: {n} pending connections refused")

    def _resize_pipe(self, s: Saved, notes: list[str]) -> None:
        assert s.pipe_size is not None
        limit = time.monotonic() + PIPE_RESIZE_WAIT_S
        while True:
            try:
                fcntl.fcntl(s.fd, fcntl.F_SETPIPE_SZ, s.pipe_size)
                notes.append(f"descriptor {s.fd}: pipe size put back")
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > limit:
                    raise FailClosed(
                        f"descriptor {s.fd}: its pipe size cannot be put back ({exc})"
                    ) from None
            time.sleep(0.005)  # more queued than fits: wait for the reader

    # anonymous inodes

    def _rewind_eventfd(self, s: Saved, notes: list[str]) -> None:
        want = int(s.info["eventfd-count"][0], 16)
        now = int(fdinfo(s.fd)["eventfd-count"][0], 16)
        if now == want:
            return
        semaphore = s.info.get("eventfd-semaphore", ["0"])[0] == "1"
        if now > want:
            reads = (now - want) if semaphore else 1
            if reads > MAX_SEMAPHORE_READS:
                raise FailClosed(f"descriptor {s.fd}: its eventfd counter cannot be put back")
            for _ in range(reads):
                os.eventfd_read(s.fd)
            now = want if semaphore else 0
        if want > now:
            os.eventfd_write(s.fd, want - now)
        notes.append(f"descriptor {s.fd}: eventfd counter put back")

    def _rewind_timerfd(self, s: Saved, notes: list[str]) -> None:
        now = fdinfo(s.fd)
        keys = ("it_interval", "settime flags")
        armed_then = s.info["it_value"][0] != "(0, 0)"
        armed_now = now["it_value"][0] != "(0, 0)"
        same = all(now.get(k) == s.info.get(k) for k in keys) and armed_then == armed_now
        if same and (armed_then or now["ticks"][0] == "0"):
            return
        spec = _Itimerspec()
        for dst, key in ((spec.value, "it_value"), (spec.interval, "it_interval")):
            sec, nsec = s.info[key][0].strip("()").split(",")
            dst.sec, dst.nsec = int(sec), int(nsec)
        if armed_then and spec.value.sec == 0 and spec.value.nsec == 0:
            spec.value.nsec = 1
        _check(_libc.timerfd_settime(s.fd, 0, ctypes.byref(spec), None), "timerfd_settime")
        notes.append(f"descriptor {s.fd}: timerfd setting put back")

    def _rewind_signalfd(self, s: Saved, notes: list[str]) -> None:
        if fdinfo(s.fd)["sigmask"] == s.info["sigmask"]:
            return
        mask = int(s.info["sigmask"][0], 16).to_bytes(8, "little") + bytes(120)
        _check(_libc.signalfd(s.fd, mask, 0), "signalfd")
        notes.append(f"descriptor {s.fd}: signalfd mask put back")

    def _rewind_epoll(self, s: Saved, notes: list[str]) -> None:
        then = {_entry_key(e): _fields(e) for e in s.info.get("tfd", [])}
        now = {_entry_key(e): _fields(e) for e in fdinfo(s.fd).get("tfd", [])}
        if {k: _interest(f) for k, f in then.items()} == {k: _interest(f) for k, f in now.items()}:
            return
        for key, f in now.items():
            if key not in then:
                self._epoll_ctl(s, EPOLL_CTL_DEL, f)
            elif _interest(then[key]) != _interest(f):
                self._epoll_ctl(s, EPOLL_CTL_MOD, then[key])
        for key, f in then.items():
            if key not in now:
                self._epoll_ctl(s, EPOLL_CTL_ADD, f)
        notes.append(f"descriptor {s.fd}: epoll interest list put back")

    def _epoll_ctl(self, s: Saved, op: int, f: dict[str, str]) -> None:
        tfd, ino = int(f["tfd"]), int(f["ino"], 16)
        target = next((o for o in self.saved if o.fd == tfd and o.ino == ino), None)
        if target is None:
            raise FailClosed(
                f"descriptor {s.fd}: a request registered a file in the epoll set under "
                f"number {tfd}, which names another file here"
            )
        event = _EPOLL_EVENT.pack(int(f["events"], 16), int(f["data"], 16))
        _check(_libc.epoll_ctl(s.fd, op, tfd, event), "epoll_ctl")

    def _rewind_inotify(self, s: Saved, notes: list[str]) -> None:
        # A watch can be re-added only by path, which the checkpoint does not have, and
        # queued events name files: reading them would bring request data here.
        if fdinfo(s.fd).get("inotify") != s.info.get("inotify"):
            raise FailClosed(f"descriptor {s.fd}: a request changed its inotify watches")
        if _fionread(s.fd) != s.queued:
            raise FailClosed(f"descriptor {s.fd}: a request left inotify events in it")


def _interest(f: dict[str, str]) -> tuple[str, str]:
    return (f.get("events", ""), f.get("data", ""))


def _entry_key(entry: str) -> tuple[str, str, str]:
    f = _fields(entry)
    return (f.get("tfd", ""), f.get("ino", ""), f.get("sdev", ""))
