"""Descriptors shared between requests: each one a channel from request 1 to request 2.

Request processes are forked from the snapshot process, so a descriptor opened at import
is one open file description shared by every request. Request 1 leaves a secret or a
setting in it; request 2 looks. Under `none` the attack succeeds (the test can fail);
under `fork` and `inplace` the description is put back after every request.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest

BACKENDS = ["none", "fork", "inplace"]


@pytest.fixture(params=BACKENDS)
def memory(request):
    return request.param


def secret() -> str:
    return "S3CR3T-" + secrets.token_hex(8)


def expect_leak(memory: str, leaked: bool, detail: object = "") -> None:
    assert leaked == (memory == "none"), f"{memory}: leaked={leaked} {detail}"


def start(serve, memory, action, env=None, **kw):
    rt = serve(memory=memory, **kw)
    resp = rt.init(action, env=env)
    assert resp.status == 200, resp.body
    return rt


def plant_and_probe(rt, channel: str, s: str):
    baseline = rt.run({"probe": channel}).json()["seen"]
    assert rt.run({"plant": channel, "secret": s}).status == 200
    return baseline, rt.run({"probe": channel}).json()["seen"]


@pytest.mark.parametrize(
    "channel",
    ["offset", "flags", "stdio", "flock", "ofd", "eventfd", "timerfd", "epoll", "signalfd"],
)
def test_a_setting_left_on_a_shared_description_is_put_back(serve, memory, channel):
    rt = start(serve, memory, "fd_state")
    before, after = plant_and_probe(rt, channel, secret())
    expect_leak(memory, before != after, (before, after))


@pytest.mark.parametrize("channel", ["pipe", "full_pipe", "udp", "socketpair", "memfd", "tmpfile"])
def test_data_left_in_a_shared_description_never_reaches_the_next_request(serve, memory, channel):
    rt = start(serve, memory, "fd_state")
    s = secret()
    before, after = plant_and_probe(rt, channel, s)
    expect_leak(memory, s in str(after), (before, after))
    if memory != "none" and channel in ("full_pipe", "memfd", "tmpfile"):
        assert "IMPORT" in after  # what the checkpoint held is there again


def test_a_file_the_file_rewind_replaces_is_restored_behind_a_held_descriptor(serve, memory):
    rt = start(serve, memory, "fd_state", files="local")
    s = secret()
    before, after = plant_and_probe(rt, "written_file", s)
    expect_leak(memory, s in after, (before, after))
    if memory != "none":
        assert after == before


class KeyValueServer:
    """A tiny line server on 127.0.0.1: ``GET k`` answers ``value-of-k``; keys starting
    with ``slow-`` are answered only after ``delay`` seconds."""

    def __init__(self, delay: float = 0.4) -> None:
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    key = line.decode().split()[1]
                    if key.startswith("slow-"):
                        time.sleep(self.delay)
                    conn.sendall(f"value-of-{key}\n".encode())
        except OSError:
            return  # the client shut the connection down (or reset it)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def kv() -> Iterator[KeyValueServer]:
    server = KeyValueServer()
    yield server
    server.close()


def test_a_reply_that_arrives_after_a_request_timed_out_never_reaches_the_next(serve, memory, kv):
    rt = start(serve, memory, "fd_client", env={"KV_PORT": str(kv.port)})
    alice = "slow-alice-" + secret()
    assert rt.run({"get": alice, "timeout": 0.1}).json() == {"timeout": True}
    time.sleep(kv.delay + 0.2)  # alice's reply is in the connection's queue by now
    got = rt.run({"get": "bob", "timeout": 2.0}).json()
    expect_leak(memory, alice in str(got), got)
    if memory != "none":
        assert "closed" in got and "value" not in got, got  # a clean EOF, not data


def test_a_keep_alive_client_sees_a_clean_eof_and_works_after_reconnecting(serve, memory, kv):
    rt = start(serve, memory, "fd_client", env={"KV_PORT": str(kv.port)})
    first = rt.run({"get": "a", "reconnect": True}).json()
    assert first == {"value": "value-of-a"}, first
    second = rt.run({"get": "b", "reconnect": True}).json()
    assert second["value"] == "value-of-b", second
    # The connection a request used is shut down after it: the next request reads EOF
    # on it and reconnects. `none` keeps reusing the one connection.
    assert ("closed" in second) == (memory != "none"), second
    third = rt.run({"get": "c", "reconnect": True}).json()
    assert third["value"] == "value-of-c", third
