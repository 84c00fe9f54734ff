"""Descriptors opened at import, each a channel a request could leave something in.

``{"plant": CHANNEL, "secret": S}`` leaves S (or a setting derived from it) in the
channel; ``{"probe": CHANNEL}`` returns what a later request can observe there.
"""

import ctypes
import fcntl
import os
import select
import socket
import struct
import tempfile

libc = ctypes.CDLL("libc.so.6", use_errno=True)
DIR = tempfile.gettempdir()

# A file opened at import: its offset, flags and locks live in the shared description.
PATH = os.path.join(DIR, f"fd-state-{os.getpid()}")
with open(PATH, "wb") as fh:
    fh.write(b"IMPORT-DATA" * 100)
FILE = os.open(PATH, os.O_RDWR)
PIPE_R, PIPE_W = os.pipe()  # empty at the checkpoint
FULL_R, FULL_W = os.pipe()  # holds bytes at the checkpoint
os.write(FULL_W, b"IMPORT")
UDP = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
UDP.bind(("127.0.0.1", 0))
UDP.setblocking(False)
PAIR_A, PAIR_B = socket.socketpair()
MEMFD = os.memfd_create("fd-state")
os.write(MEMFD, b"IMPORT")
TMPFILE = os.open(DIR, os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(TMPFILE, b"IMPORT")
EVENT = os.eventfd(0, os.EFD_NONBLOCK)
TIMER = libc.timerfd_create(1, 0)  # CLOCK_MONOTONIC, disarmed
EPOLL = select.epoll()
SIGMASK = bytes(128)
SIGNAL = libc.signalfd(-1, SIGMASK, 0)
FLOCK = struct.Struct("hhqqi4x")


class Itimerspec(ctypes.Structure):
    _fields_ = [("isec", ctypes.c_long), ("insec", ctypes.c_long)] + [
        ("vsec", ctypes.c_long),
        ("vnsec", ctypes.c_long),
    ]


def bits(secret):
    return int.from_bytes(secret.encode()[-2:], "little")


def plant(channel, secret):
    n = bits(secret)
    if channel == "offset":
        os.lseek(FILE, n, os.SEEK_SET)
    elif channel == "flags":
        for fd in (FILE, 0, 1, 2):  # no O_NONBLOCK on stdin: `none` would break on it
            fl = fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND
            fcntl.fcntl(fd, fcntl.F_SETFL, fl | (os.O_NONBLOCK if fd else 0))
    elif channel == "stdio":  # a covert channel through the pipes to the proxy
        for fd in (0, 1, 2):  # under fork, fd 0 is /dev/null by now: no pipe size
            fcntl.fcntl(fd, fcntl.F_SETSIG, 1 + n % 30)
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096 * (2 + n % 8))
            except OSError:
                pass
    elif channel == "pipe":
        os.write(PIPE_W, secret.encode())
    elif channel == "full_pipe":
        os.set_blocking(FULL_R, False)
        try:
            os.read(FULL_R, 100)
        except BlockingIOError:
            pass
        os.write(FULL_W, secret.encode())
    elif channel == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(secret.encode(), UDP.getsockname())
    elif channel == "socketpair":
        PAIR_A.send(secret.encode())
    elif channel == "memfd":
        os.pwrite(MEMFD, secret.encode(), 0)
    elif channel == "tmpfile":
        os.pwrite(TMPFILE, secret.encode(), 0)
    elif channel == "flock":
        fcntl.flock(FILE, fcntl.LOCK_EX)
    elif channel == "ofd":
        fcntl.fcntl(FILE, fcntl.F_OFD_SETLK, FLOCK.pack(fcntl.F_WRLCK, 0, n, 1, 0))
    elif channel == "eventfd":
        os.eventfd_write(EVENT, n)
    elif channel == "timerfd":
        spec = Itimerspec(n, 0, 1000 + n, 0)
        libc.timerfd_settime(TIMER, 0, ctypes.byref(spec), None)
    elif channel == "epoll":
        EPOLL.register(EVENT, select.EPOLLIN)
        EPOLL.register(PIPE_R, select.EPOLLIN)
    elif channel == "signalfd":
        mask = (1 << (n % 30)).to_bytes(8, "little") + bytes(120)
        libc.signalfd(SIGNAL, mask, 0)
    elif channel == "written_file":  # through the descriptor; the sidecar replaces it
        os.pwrite(FILE, secret.encode(), 0)
    return {"planted": channel}


def probe(channel):
    if channel == "offset":
        return os.lseek(FILE, 0, os.SEEK_CUR)
    if channel == "flags":
        mask = os.O_NONBLOCK | os.O_APPEND
        return [fcntl.fcntl(fd, fcntl.F_GETFL) & mask for fd in (FILE, 0, 1, 2)]
    if channel == "stdio":
        seen = []
        for fd in (0, 1, 2):
            try:
                size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            except OSError:
                size = None
            seen.append([fcntl.fcntl(fd, fcntl.F_GETSIG), fcntl.fcntl(fd, fcntl.F_GETOWN), size])
        return seen
    if channel in ("pipe", "full_pipe"):
        fd = PIPE_R if channel == "pipe" else FULL_R
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 100).decode()
        except BlockingIOError:
            return ""
        finally:
            os.set_blocking(fd, True)
    if channel == "udp":
        try:
            return UDP.recv(100).decode()
        except BlockingIOError:
            return ""
    if channel == "socketpair":
        try:
            return PAIR_B.recv(100, socket.MSG_DONTWAIT).decode()
        except BlockingIOError:
            return ""
    if channel == "memfd":
        return os.pread(MEMFD, 100, 0).decode(errors="replace")
    if channel in ("tmpfile",):
        return os.pread(TMPFILE, 100, 0).decode(errors="replace")
    if channel == "written_file":
        return os.pread(FILE, 40, 0).decode(errors="replace")
    if channel in ("flock", "ofd"):
        other = os.open(PATH, os.O_RDWR)  # a description of our own: it sees others' locks
        try:
            if channel == "flock":
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                got = fcntl.fcntl(other, fcntl.F_OFD_GETLK, FLOCK.pack(fcntl.F_WRLCK, 0, 0, 0, 0))
                return FLOCK.unpack(got)[0] != fcntl.F_UNLCK
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(other)
    if channel in ("eventfd", "timerfd", "epoll", "signalfd"):
        fds = {"eventfd": EVENT, "timerfd": TIMER, "epoll": EPOLL.fileno(), "signalfd": SIGNAL}
        fd = fds[channel]
        with open(f"/proc/self/fdinfo/{fd}") as fh:
            keep = ("eventfd-count", "it_value", "it_interval", "tfd", "sigmask")
            return [x for x in fh.read().splitlines() if x.startswith(keep)]
    raise ValueError(channel)


def main(args):
    if "plant" in args:
        return plant(args["plant"], args["secret"])
    return {"seen": probe(args["probe"])}
