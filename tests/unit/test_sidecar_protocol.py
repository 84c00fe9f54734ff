"""Unit tests of the sidecar wire protocol: framing, validation, addresses (real sockets)."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from rewind.sidecar.protocol import (
    MAX_LINE,
    LineReader,
    LineTooLong,
    ProtocolError,
    encode,
    error_reply,
    ok_reply,
    parse_address,
    parse_request,
    send_all,
)

pytestmark = pytest.mark.unit


def test_parse_request_accepts_each_verb() -> None:
    for op in ("checkpoint", "rewind", "status"):
        req = parse_request(json.dumps({"op": op, "id": 7}).encode())
        assert (req.op, req.id) == (op, 7)


@pytest.mark.parametrize(
    ("line", "echo_id", "echo_op"),
    [
        (b"{not json", None, None),
        (b"[1, 2]", None, None),
        (b'{"op": "rewind"}', None, "rewind"),
        (b'{"op": "rewind", "id": true}', None, "rewind"),
        (b'{"op": "rewind", "id": "3"}', None, "rewind"),
        (b'{"op": "explode", "id": 4}', 4, "explode"),
        (b'{"op": 5, "id": 4}', 4, None),
        (b"\xff\xfe", None, None),
    ],
)
def test_bad_requests_raise_with_what_can_be_echoed(
    line: bytes, echo_id: int | None, echo_op: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert (info.value.req_id, info.value.op) == (echo_id, echo_op)
    assert str(info.value).startswith("request:")


def test_replies_are_single_json_lines() -> None:
    ok = ok_reply(3, "rewind", {"ms": 1.5, "name": "a\nb"})
    err = error_reply(None, None, "line\nbreak")
    for data in (ok, err):
        assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(ok) == {
        "id": 3,
        "ok": True,
        "op": "rewind",
        "metrics": {"ms": 1.5, "name": "a\nb"},
    }
    assert json.loads(err)["ok"] is False


@pytest.mark.parametrize(
    ("address", "family", "addr"),
    [
        ("unix:/run/rewind/s.sock", socket.AF_UNIX, "/run/rewind/s.sock"),
        ("tcp:127.0.0.1:40510", socket.AF_INET, ("127.0.0.1", 40510)),
        ("tcp:[::1]:9", socket.AF_INET6, ("::1", 9)),
    ],
)
def test_parse_address(address: str, family: socket.AddressFamily, addr: object) -> None:
    assert parse_address(address) == (family, addr)


@pytest.mark.parametrize(
    "address",
    [
        "unix:relative",
        "tcp:host",
        "tcp:host:0",
        "tcp::80",
        "udp:1.2.3.4:5",
        "/path",
        "tcp:10.0.0.1:5",  # not loopback: the proxy refuses it too
        "tcp:localhost:80",  # a name, not a loopback IP address (as in the proxy)
        "tcp:127.0.0.1:0",
    ],
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="bad sidecar address"):
        parse_address(address)


def test_reader_reassembles_lines_split_across_recvs() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = LineReader(b)
        msg = encode({"op": "status", "id": 1}) + encode({"op": "rewind", "id": 2})

        def trickle() -> None:
            for i in range(len(msg)):
                a.send(msg[i : i + 1])
            a.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=trickle)
        t.start()
        assert parse_request(reader.read_line() or b"").id == 1
        assert parse_request(reader.read_line() or b"").id == 2
        assert reader.read_line() is None
        t.join()


def test_oversized_line_raises_once_and_stream_stays_usable() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = LineReader(b)
        big = b'{"op": "status", "id": 1, "pad": "' + b"x" * (MAX_LINE * 3) + b'"}\n'
        tail = encode({"op": "status", "id": 2})
        t = threading.Thread(target=lambda: (send_all(a, big + tail), a.shutdown(socket.SHUT_WR)))
        t.start()
        with pytest.raises(LineTooLong):
            reader.read_line()
        assert parse_request(reader.read_line() or b"").id == 2
        assert reader.read_line() is None
        t.join()


def test_line_just_under_limit_is_accepted() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = LineReader(b)
        line = b"y" * MAX_LINE + b"\n"
        t = threading.Thread(target=send_all, args=(a, line))
        t.start()
        assert reader.read_line() == b"y" * MAX_LINE
        t.join()
