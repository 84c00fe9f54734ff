"""rewind.memory.descriptors: what a request changes in a shared description comes back.

Each test opens descriptors, takes the checkpoint over just those, changes them from a
forked child (a request process shares every description with its parent), rewinds,
and checks the checkpoint's state is back -- or that the descriptor behaves as closed.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from rewind.memory.descriptors import SharedDescriptors
from rewind.memory.fdinfo import F_GETOWN_EX, fdinfo, unix_peers
from rewind.memory.fdrecord import own_descriptors
from rewind.request.errors import FailClosed

libc = ctypes.CDLL("libc.so.6", use_errno=True)


@pytest.fixture
def opened() -> Iterator[Callable[..., list[int]]]:
    """Track descriptors a test opens; close them after it."""
    fds: list[int] = []

    def track(*new: int) -> list[int]:
        fds.extend(new)
        return list(new)

    yield track
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def checkpoint(*fds: int) -> SharedDescriptors:
    """The checkpoint over just ``fds`` (pytest's own descriptors are left alone)."""
    return SharedDescriptors.take(set(own_descriptors()) - set(fds))


def in_child(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a forked child, as a request process would, and wait for it."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_offset_flags_signal_and_owner_come_back(tmp_path, opened):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    (fd,) = opened(os.open(path, os.O_RDWR))
    os.lseek(fd, 7, os.SEEK_SET)
    ck = checkpoint(fd)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)

    def request() -> None:
        os.lseek(fd, 42, os.SEEK_SET)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK | os.O_APPEND)
        fcntl.fcntl(fd, fcntl.F_SETSIG, 10)
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())

    in_child(request)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 42  # shared with the child, before the rewind
    notes = ck.rewind(clean=True)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 7
    assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
    assert fcntl.fcntl(fd, fcntl.F_GETSIG) == 0
    assert fcntl.fcntl(fd, fcntl.F_GETOWN) == 0
    assert struct.unpack("ii", fcntl.fcntl(fd, F_GETOWN_EX, bytes(8)))[1] == 0
    assert any("F_SETOWN" in n for n in notes)


def test_a_pipe_gets_its_size_back_and_loses_what_a_request_queued(opened):
    r, w = opened(*os.pipe())
    size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
    ck = checkpoint(r, w)

    def request() -> None:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size * 4)
        os.write(w, b"secret")

    in_child(request)
    ck.rewind(clean=True)
    assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == size
    assert not select.select([r], [], [], 0)[0]  # empty again
    os.write(w, b"next")
    assert os.read(r, 10) == b"next"  # and still usable


def test_a_pipe_that_held_bytes_at_the_checkpoint_holds_them_again(opened):
    r, w = opened(*os.pipe())
    os.write(w, b"IMPORT")
    ck = checkpoint(r, w)
    assert os.read(r, 0) == b""  # the checkpoint did not consume them

    def request() -> None:
        assert os.read(r, 3) == b"IMP"
        os.write(w, b"secret")

    in_child(request)
    ck.rewind(clean=True)
    assert os.read(r, 100) == b"IMPORT"


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        server, _ = srv.accept()
    return client, server


def test_tcp_connection_used_by_a_request_reads_eof_afterwards():
    client, server = _tcp_pair()
    try:
        ck = checkpoint(client.fileno())

        def request() -> None:
            client.sendall(b"GET alice\n")  # and leaves before the reply

        in_child(request)
        notes = ck.rewind(clean=True)
        assert any("shut down" in n for n in notes), notes
        server.sendall(b"alice's reply\n")  # arrives late: it must never be read
        time.sleep(0.05)
        try:
            got = client.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b""
    finally:
        client.close()
        server.close()


def test_an_untouched_connection_stays_open_unless_the_request_timed_out():
    client, server = _tcp_pair()
    try:
        ck = checkpoint(client.fileno())
        in_child(lambda: None)
        assert ck.rewind(clean=True) == []
        server.sendall(b"ping")
        assert client.recv(4) == b"ping"  # the checkpoint had no unread bytes: this did
    finally:
        client.close()
        server.close()


def test_unread_data_or_a_timeout_shuts_a_connection_down():
    for clean, planted in ((True, b"unread"), (False, b"")):
        client, server = _tcp_pair()
        try:
            ck = checkpoint(client.fileno())
            if planted:
                server.sendall(planted)
                time.sleep(0.05)
            notes = ck.rewind(clean=clean)
            assert any("shut down" in n for n in notes), notes
            assert client.recv(100) == b""  # the queued bytes were discarded too
        finally:
            client.close()
            server.close()


def test_a_socketpair_held_here_is_drained_not_shut(opened):
    a, b = socket.socketpair()
    fa, fb = opened(a.detach(), b.detach())
    ck = checkpoint(fa, fb)
    in_child(lambda: os.write(fa, b"secret"))
    ck.rewind(clean=False)
    assert select.select([fb], [], [], 0)[0] == []
    os.write(fa, b"next")
    assert os.read(fb, 10) == b"next"


def test_queued_datagrams_are_discarded(opened):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    addr = udp.getsockname()
    (fd,) = opened(udp.detach())
    ck = checkpoint(fd)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"secret-1", addr)
        s.sendto(b"secret-2", addr)
    time.sleep(0.02)
    ck.rewind(clean=True)
    assert select.select([fd], [], [], 0)[0] == []


def test_connections_left_pending_on_a_listener_are_refused(opened):
    srv = socket.create_server(("127.0.0.1", 0))
    addr = srv.getsockname()
    (fd,) = opened(srv.detach())
    ck = checkpoint(fd)
    planted = socket.create_connection(addr)
    planted.sendall(b"secret")
    ck.rewind(clean=True)
    assert select.select([fd], [], [], 0)[0] == []
    with pytest.raises(ConnectionResetError):  # closed with its data unread: a reset
        planted.recv(10)
    planted.close()


def test_flock_and_ofd_locks_a_request_took_are_released(tmp_path, opened):
    path = tmp_path / "lock"
    path.write_bytes(b"")
    (fd,) = opened(os.open(path, os.O_RDWR))
    ck = checkpoint(fd)

    def request() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 5, 1, 0))

    in_child(request)
    assert fdinfo(fd).get("lock")  # the description holds them after the child is gone
    ck.rewind(clean=True)
    assert not fdinfo(fd).get("lock")
    other = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)


def test_a_lock_held_at_the_checkpoint_is_kept(tmp_path, opened):
    path = tmp_path / "lock"
    path.write_bytes(b"")
    (fd,) = opened(os.open(path, os.O_RDWR))
    fcntl.flock(fd, fcntl.LOCK_SH)
    ck = checkpoint(fd)
    in_child(lambda: fcntl.flock(fd, fcntl.LOCK_EX))
    ck.rewind(clean=True)
    assert [x.split()[3] for x in fdinfo(fd)["lock"]] == ["READ"]


def test_eventfd_timerfd_signalfd_and_epoll_come_back(opened):
    ev = os.eventfd(2, os.EFD_NONBLOCK)
    sem = os.eventfd(3, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
    timer = libc.timerfd_create(1, 0)
    sig = libc.signalfd(-1, bytes(128), 0)
    epfd = libc.epoll_create1(0)
    r, w = os.pipe()
    opened(ev, sem, timer, sig, epfd, r, w)
    libc.epoll_ctl(epfd, 1, r, struct.pack("=IQ", select.EPOLLIN, 99))
    ck = checkpoint(ev, sem, timer, sig, epfd, r, w)
    before = {fd: fdinfo(fd) for fd in (ev, sem, timer, sig, epfd)}

    class Spec(ctypes.Structure):
        _fields_ = [(n, ctypes.c_long) for n in ("isec", "insec", "vsec", "vnsec")]

    def request() -> None:
        os.eventfd_write(ev, 40)
        os.eventfd_read(sem)
        libc.timerfd_settime(timer, 0, ctypes.byref(Spec(5, 0, 100, 0)), None)
        libc.signalfd(sig, (1 << 9).to_bytes(8, "little") + bytes(120), 0)
        libc.epoll_ctl(epfd, 3, r, struct.pack("=IQ", select.EPOLLOUT, 7))
        libc.epoll_ctl(epfd, 1, ev, struct.pack("=IQ", select.EPOLLIN, 8))

    in_child(request)
    ck.rewind(clean=True)
    keys = ("eventfd-count", "it_interval", "it_value", "sigmask", "tfd")
    for fd, info in before.items():
        assert {k: v for k, v in fdinfo(fd).items() if k in keys} == {
            k: v for k, v in info.items() if k in keys
        }, fd


def test_new_inotify_watches_fail_closed(tmp_path, opened):
    (ino,) = opened(libc.inotify_init1(os.O_NONBLOCK))
    ck = checkpoint(ino)
    libc.inotify_add_watch(ino, str(tmp_path).encode(), 0x100)
    with pytest.raises(FailClosed, match="inotify"):
        ck.rewind(clean=True)


@pytest.mark.parametrize("kind", ["memfd", "tmpfile"])
def test_a_file_no_path_reaches_gets_its_content_back(tmp_path, opened, kind):
    if kind == "memfd":
        fd = os.memfd_create("t")
    else:
        fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
    opened(fd)
    os.write(fd, b"IMPORT")
    ck = checkpoint(fd)

    def request() -> None:
        os.pwrite(fd, b"secret-and-more", 0)

    in_child(request)
    ck.rewind(clean=True)
    assert os.pread(fd, 100, 0) == b"IMPORT"
    assert os.lseek(fd, 0, os.SEEK_CUR) == 6


def test_a_file_replaced_behind_a_held_descriptor_gets_the_restored_content(tmp_path, opened):
    path = tmp_path / "data"
    path.write_bytes(b"IMPORT")
    (fd,) = opened(os.open(path, os.O_RDWR))
    ck = checkpoint(fd)
    in_child(lambda: os.pwrite(fd, b"secret", 0))
    # What the file sidecar does: a new file with the checkpoint's content, renamed over.
    (tmp_path / "new").write_bytes(b"IMPORT")
    os.rename(tmp_path / "new", path)
    ck.rewind(clean=True)
    assert os.pread(fd, 100, 0) == b"IMPORT"
    in_child(lambda: os.pwrite(fd, b"again!", 0))
    ck.rewind(clean=True)  # from now on it is a file no path reaches
    assert os.pread(fd, 100, 0) == b"IMPORT"


def test_only_the_descriptors_it_was_not_told_to_skip_are_recorded(opened):
    r, w = opened(*os.pipe())
    ck = SharedDescriptors.take(set(own_descriptors()) - {r})
    assert [s.fd for s in ck.saved] == [r]


def test_unix_peers_pairs_both_ends_of_a_socketpair():
    a, b = socket.socketpair()
    try:
        peers = unix_peers()
        ia, ib = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        assert peers[ia] == ib and peers[ib] == ia
    finally:
        a.close()
        b.close()


def test_the_debug_log_lists_connected_sockets_at_the_checkpoint(opened):
    client, server = _tcp_pair()
    a, b = socket.socketpair()
    try:
        fds = (client.fileno(), a.fileno(), b.fileno())
        lines: list[str] = []
        SharedDescriptors.take(set(own_descriptors()) - set(fds), log=lines.append)
        assert any(
            f"descriptor {client.fileno()} is a connection to ('127.0.0.1'" in x for x in lines
        )
        assert any(f"descriptor {a.fileno()}: one end of a socketpair" in x for x in lines)
    finally:
        for s in (client, server, a, b):
            s.close()
