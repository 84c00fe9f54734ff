"""Descriptors opened at import, attacked in containers of the image.

The key attacks of tests/process/test_shared_descriptors.py, in one warm container each:

- ``baseline``: ``REWIND_MEMORY=none``: the attack must SUCCEED (the test can fail);
- ``default-seccomp``: the image's defaults under Docker's default seccomp profile
  (``auto`` picks fork there);
- ``shipped-seccomp``: the image's defaults with core/python3Action/seccomp-userfaultfd.json
  (``auto`` picks inplace).

The key-value server of the Redis-style attack runs inside the action's container (a
``docker exec`` before ``/init``), so every byte stays on the container's loopback.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import ActionSpec, Container, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "tests" / "actions"
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
KV_PORT = 7379

MODES: dict[str, tuple[dict[str, str], list[str]]] = {
    "baseline": ({"REWIND_MEMORY": "none", "REWIND_FILES": "off"}, []),
    "default-seccomp": ({"REWIND_DEBUG": "1"}, []),
    "shipped-seccomp": ({"REWIND_DEBUG": "1"}, ["--security-opt", f"seccomp={PROFILE}"]),
}
BACKEND = {"default-seccomp": "fork", "shipped-seccomp": "inplace"}

# GET k answers value-of-k; keys starting with slow- only after 0.4 s.
KV_SERVER = f"""
import socket, threading, time
def serve(conn):
    try:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                key = line.decode().split()[1]
                if key.startswith("slow-"):
                    time.sleep(0.4)
                conn.sendall(("value-of-" + key + "\\n").encode())
    except OSError:
        pass
srv = socket.create_server(("127.0.0.1", {KV_PORT}))
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def secret() -> str:
    return "S3CR3T-" + secrets.token_hex(8)


def expect_leak(mode: str, leaked: bool, detail: object = "") -> None:
    assert leaked == (mode == "baseline"), f"{mode}: leaked={leaked} {detail}"


class Warm:
    """One initialised container of ``action``, sent ``/run`` requests directly."""

    def __init__(self, invoker: Invoker, container: Container, spec: ActionSpec) -> None:
        self.invoker, self.container, self.spec = invoker, container, spec

    def run(self, params: Any) -> Any:
        body = self.invoker.run_body(self.spec, params, 30)
        try:
            reply = self.container.post("/run", body, 30)
        except OSError as exc:
            out, err = self.container.logs()
            pytest.fail(f"/run {params}: {exc!r}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}")
        self.container.collect_logs(5.0)
        assert reply.status == 200, reply
        return reply.json()

    def backend(self) -> str:
        """fork when ``auto`` said it fell back to fork (the debug log), else inplace."""
        _, err = self.container.logs()
        return "fork" if "using fork" in err or "serving with fork" in err else "inplace"


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def start(runtime_image: str, mode: str) -> Iterator[Any]:
    invokers: list[Invoker] = []

    def _start(name: str, kv: bool = False) -> Warm:
        env, extra = MODES[mode]
        inv = Invoker(runtime_image, memory_mb=256, env=env, extra_args=extra)
        invokers.append(inv)
        spec = ActionSpec(
            code=(ACTIONS / name / "main.py").read_text(),
            name=name,
            env={"KV_PORT": str(KV_PORT)} if kv else {},
        )
        container = inv.create(name)
        if kv:
            _start_kv_server(container)
        reply = container.init(spec.init_value(), 60)
        assert reply.status == 200, reply
        container.collect_logs(5.0)
        warm = Warm(inv, container, spec)
        if mode in BACKEND:
            assert warm.backend() == BACKEND[mode]
        return warm

    try:
        yield _start
    finally:
        for inv in invokers:
            inv.close()


def _start_kv_server(container: Container) -> None:
    subprocess.run([DOCKER, "exec", "-d", container.id, "python3", "-c", KV_SERVER], check=True)
    probe = f"import socket; socket.create_connection(('127.0.0.1', {KV_PORT}), 1).close()"
    for _ in range(100):
        done = subprocess.run(
            [DOCKER, "exec", container.id, "python3", "-c", probe], capture_output=True
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("the key-value server did not start in the container")


@pytest.mark.parametrize("channel", ["offset", "flags", "stdio", "flock", "eventfd"])
def test_a_setting_left_on_a_shared_description_is_put_back(start, mode, channel):
    warm = start("fd_state")
    before = warm.run({"probe": channel})["seen"]
    warm.run({"plant": channel, "secret": secret()})
    after = warm.run({"probe": channel})["seen"]
    expect_leak(mode, before != after, (before, after))


@pytest.mark.parametrize("channel", ["pipe", "full_pipe", "udp", "memfd", "written_file"])
def test_data_left_in_a_shared_description_never_reaches_the_next_request(start, mode, channel):
    warm = start("fd_state")
    s = secret()
    warm.run({"probe": channel})
    warm.run({"plant": channel, "secret": s})
    after = warm.run({"probe": channel})["seen"]
    expect_leak(mode, s in str(after), after)


def test_a_reply_that_arrives_after_a_request_timed_out_never_reaches_the_next(start, mode):
    warm = start("fd_client", kv=True)
    alice = "slow-alice-" + secret()
    assert warm.run({"get": alice, "timeout": 0.1}) == {"timeout": True}
    time.sleep(0.6)  # alice's reply is in the connection's queue by now
    got = warm.run({"get": "bob", "timeout": 2.0})
    expect_leak(mode, alice in str(got), got)
    if mode != "baseline":
        assert "closed" in got and "value" not in got, got
        again = warm.run({"get": "bob", "reconnect": True})
        assert again["value"] == "value-of-bob", again
