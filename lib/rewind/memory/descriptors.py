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
descriptors at the checkpoint (``fdrecord``; the kernel queries are in ``fdinfo``);
``rewind`` puts it back after every request, once the request's processes are dead
or stopped. Nothing a request wrote is ever read into this process: pipes drain to
/dev/null with splice, sockets discard with MSG_TRUNC.
What cannot be put back is made to behave as closed (a connection is shut down, so
later requests see EOF and reconnect) or, when even that is impossible, the rewind
fails closed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import socket
import time
from collections.abc import Callable, Iterable

from rewind.memory.fdinfo import (
    EPOLL_CTL_ADD,
    EPOLL_CTL_DEL,
    EPOLL_CTL_MOD,
    EPOLL_EVENT,
    F_SETOWN_EX,
    FLOCK,
    OWNER,
    Itimerspec,
    check_ret,
    discard_datagrams,
    discard_stream,
    epoll_entry_key,
    epoll_interest,
    fdinfo,
    fdinfo_fields,
    fionread,
    get_owner,
    libc,
    lock_key,
    pipe_capacity,
    raw_fdinfo,
    splice_to_null,
    tcp_data_segs_fd,
    unix_peers,
)
from rewind.memory.fdrecord import (
    Saved,
    own_descriptors,
    refill_pipe,
    reopen,
    save,
)
from rewind.request.errors import FailClosed

# How long a pipe may stay too full to be shrunk back (the proxy drains stdout).
PIPE_RESIZE_WAIT_S = 1.0
MAX_SEMAPHORE_READS = 1 << 16


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
                found_one = save(fd)
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
        if s.pipe_size is not None and pipe_capacity(s.fd) != s.pipe_size:
            self._resize_pipe(s, notes)
        if s.sig is not None and fcntl.fcntl(s.fd, fcntl.F_GETSIG) != s.sig:
            fcntl.fcntl(s.fd, fcntl.F_SETSIG, s.sig)
            notes.append(f"descriptor {s.fd}: F_SETSIG put back")
        if s.owner is not None and get_owner(s.fd) != s.owner:
            fcntl.fcntl(s.fd, F_SETOWN_EX, OWNER.pack(*s.owner))
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
        w = reopen(s.fd, os.O_WRONLY | os.O_CLOEXEC)
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
        if not s.locks and b"\nlock:" not in raw_fdinfo(s.fd):
            return  # the common case, without parsing
        now = [lock_key(x) for x in fdinfo(s.fd).get("lock", [])]
        if sorted(now) == sorted(s.locks):
            return
        fcntl.flock(s.fd, fcntl.LOCK_UN)
        fcntl.fcntl(s.fd, fcntl.F_OFD_SETLK, FLOCK.pack(fcntl.F_UNLCK, 0, 0, 0, 0))
        for cls, typ, start, end in s.locks:
            if cls == "FLOCK":
                op = fcntl.LOCK_EX if typ == "WRITE" else fcntl.LOCK_SH
                fcntl.flock(s.fd, op | fcntl.LOCK_NB)
            elif cls == "OFDLCK":
                length = 0 if end == "EOF" else int(end) - int(start) + 1
                ltype = fcntl.F_WRLCK if typ == "WRITE" else fcntl.F_RDLCK
                fcntl.fcntl(s.fd, fcntl.F_OFD_SETLK, FLOCK.pack(ltype, 0, int(start), length, 0))
        notes.append(f"descriptor {s.fd}: locks put back")

    # pipes and sockets

    def _rewind_pipe(self, s: Saved, notes: list[str]) -> None:
        if s.flags & os.O_ACCMODE == os.O_WRONLY:
            return  # its read end is someone else's (or listed on its own)
        queued = fionread(s.fd)
        if s.content is not None:
            splice_to_null(s.fd, queued, is_pipe=True)
            refill_pipe(s)
            return
        if s.unrestorable and queued != s.queued:
            raise FailClosed(f"descriptor {s.fd} ({s.target}): {s.unrestorable}")
        if queued > s.queued:
            splice_to_null(s.fd, queued - s.queued, is_pipe=True)
            notes.append(f"descriptor {s.fd} ({s.target}): {queued} unread bytes discarded")

    def _rewind_socket(self, s: Saved, clean: bool, notes: list[str]) -> None:
        sk = s.sock
        assert sk is not None
        if sk.listening:
            self._refuse_pending(s, notes)
            return
        if sk.type == socket.SOCK_DGRAM:
            queued = fionread(s.fd)
            if queued and queued != s.queued:
                discard_datagrams(s.fd)
                if s.queued:
                    self._shut(s, "its queued datagrams changed", notes)
            return
        if s.closed or not sk.peer:
            return
        queued = fionread(s.fd)
        why = ""
        if queued != s.queued and sk.peer_ino not in self._socket_inodes:
            why = f"it holds {queued} unread bytes"
        elif sk.tcp_segs is not None:
            segs = tcp_data_segs_fd(s.fd)
            if segs != sk.tcp_segs:
                why = "the request used it (a reply may still be on its way)"
        elif sk.peer_ino in self._socket_inodes:
            # A socketpair both of whose ends we hold: every writer is gone by now.
            if s.queued == 0:
                if queued:
                    discard_stream(s.fd, queued)
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
            discard_datagrams(s.fd)
        else:
            discard_stream(s.fd, fionread(s.fd))
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
        spec = Itimerspec()
        for dst, key in ((spec.value, "it_value"), (spec.interval, "it_interval")):
            sec, nsec = s.info[key][0].strip("()").split(",")
            dst.sec, dst.nsec = int(sec), int(nsec)
        if armed_then and spec.value.sec == 0 and spec.value.nsec == 0:
            spec.value.nsec = 1
        check_ret(libc.timerfd_settime(s.fd, 0, ctypes.byref(spec), None), "timerfd_settime")
        notes.append(f"descriptor {s.fd}: timerfd setting put back")

    def _rewind_signalfd(self, s: Saved, notes: list[str]) -> None:
        if fdinfo(s.fd)["sigmask"] == s.info["sigmask"]:
            return
        mask = int(s.info["sigmask"][0], 16).to_bytes(8, "little") + bytes(120)
        check_ret(libc.signalfd(s.fd, mask, 0), "signalfd")
        notes.append(f"descriptor {s.fd}: signalfd mask put back")

    def _rewind_epoll(self, s: Saved, notes: list[str]) -> None:
        then = {epoll_entry_key(e): fdinfo_fields(e) for e in s.info.get("tfd", [])}
        now = {epoll_entry_key(e): fdinfo_fields(e) for e in fdinfo(s.fd).get("tfd", [])}
        if {k: epoll_interest(f) for k, f in then.items()} == {
            k: epoll_interest(f) for k, f in now.items()
        }:
            return
        for key, f in now.items():
            if key not in then:
                self._epoll_ctl(s, EPOLL_CTL_DEL, f)
            elif epoll_interest(then[key]) != epoll_interest(f):
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
        event = EPOLL_EVENT.pack(int(f["events"], 16), int(f["data"], 16))
        check_ret(libc.epoll_ctl(s.fd, op, tfd, event), "epoll_ctl")

    def _rewind_inotify(self, s: Saved, notes: list[str]) -> None:
        # A watch can be re-added only by path, which the checkpoint does not have, and
        # queued events name files: reading them would bring request data here.
        if fdinfo(s.fd).get("inotify") != s.info.get("inotify"):
            raise FailClosed(f"descriptor {s.fd}: a request changed its inotify watches")
        if fionread(s.fd) != s.queued:
            raise FailClosed(f"descriptor {s.fd}: a request left inotify events in it")
