"""Recording the shared descriptors at the checkpoint (snapshot process).

``save`` notes, for one descriptor open at the checkpoint, what lives in its open file
description and outlives a request (see ``descriptors``): offset, flags, owner, locks, a
pipe's size and import-time contents, a socket's state, an anonymous inode's fdinfo, and
the content of a file no path reaches.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from dataclasses import dataclass, field

from rewind.memory import identity
from rewind.memory.fdinfo import (
    fdinfo,
    fionread,
    get_owner,
    lock_key,
    or_none,
    pipe_capacity,
    tcp_data_segs,
)

# A pipe's contents at the checkpoint are kept (they are import-time data) up to this.
MAX_SAVED_PIPE = 1 << 20
# Content of a file no path reaches is kept to restore it, up to this per file.
MAX_SAVED_FILE = 64 << 20


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
            segs = tcp_data_segs(sock)
        return SockState(int(fam), int(typ), listening, peer_s, segs)
    finally:
        sock.close()


def save(fd: int) -> Saved | None:
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
        sig=or_none(fcntl.fcntl, fd, fcntl.F_GETSIG),
        owner=or_none(get_owner, fd),
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
        s.pipe_size = pipe_capacity(fd)
        s.queued = fionread(fd)
        if s.queued and not s.stdio and flags & os.O_ACCMODE != os.O_WRONLY:
            _save_pipe_content(s)
    if kind in ("file", "dir"):
        s.locks = [lock_key(x) for x in fdinfo(fd).get("lock", [])]
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
            s.queued = fionread(fd)
    if kind in ("eventfd", "timerfd", "epoll", "inotify", "signalfd"):
        s.info = fdinfo(fd)
        if kind == "inotify":
            s.queued = fionread(fd)
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
    refill_pipe(s)


def reopen(fd: int, flags: int) -> int:
    """Open what ``fd`` refers to again, through /proc/self/fd, as the function user.

    The action opened it at import as that user (a pipe's inode is its creator's, mode
    0600), so the snapshot process's own user may not open it. No request runs while
    this is called: at the checkpoint, or once the request's processes are gone.
    """
    with identity.acting_as_function():
        return os.open(f"/proc/self/fd/{fd}", flags)


def refill_pipe(s: Saved) -> None:
    if not s.content:
        return
    w = reopen(s.fd, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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
        fd = reopen(s.fd, os.O_RDONLY | os.O_CLOEXEC)
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


def own_descriptors() -> list[int]:
    """The descriptor numbers this process has open now."""
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))
