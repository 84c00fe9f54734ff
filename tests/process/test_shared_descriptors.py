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


@pytest.mark.parametrize(
    "channel", ["pipe", "full_pipe", "udp", "socketpair", "memfd", "tmpfile"]
)
def test_data_left_in_a_shared_description_never_reaches_the_next_request(
    serve, memory, channel
):
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
