"""Kernel IPC objects, keyrings and every writable place, attacked in the image.

One warm container serves every request of a test (the invoker emulator), with Docker's
default seccomp profile (no --security-opt: `auto` serves with fork) and with the shipped
profile (core/python3Action/seccomp-userfaultfd.json: `auto` serves in place). Each attack
runs against the baseline (REWIND_MEMORY=none, REWIND_FILES=off), where it must succeed,
and against the image's defaults, where it must fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import ActionSpec, Activation, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"
PROFILES = {"default": [], "shipped": ["--security-opt", f"seccomp={PROFILE}"]}
MODES: dict[str, dict[str, str]] = {
    "baseline": {"REWIND_MEMORY": "none", "REWIND_FILES": "off"},
    "rewind": {},  # the image's defaults
}
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


class Warm:
    """One action in one warm container; every invocation must reuse it."""

    def __init__(self, invoker: Invoker, name: str) -> None:
        self.invoker = invoker
        self.spec = ActionSpec(
            code=(ROOT / "tests/actions" / name / "main.py").read_text(), name=name
        )
        self.container = ""

    def invoke(self, params: Any) -> Activation:
        act = self.invoker.invoke(self.spec, params, 60)
        self.container = self.container or act.container
        assert act.container == self.container, "the warm container was replaced"
        return act

    def result(self, params: Any) -> Any:
        act = self.invoke(params)
        assert act.ok, act
        return act.result


@pytest.fixture
def start(runtime_image: str) -> Iterator[Callable[..., Warm]]:
    invokers: list[Invoker] = []

    def _start(name: str, mode: str, profile: str, env: dict[str, str] | None = None) -> Warm:
        inv = Invoker(
            runtime_image,
            memory_mb=256,
            env={**MODES[mode], **(env or {})},
            extra_args=PROFILES[profile],
        )
        invokers.append(inv)
        return Warm(inv, name)

    try:
        yield _start
    finally:
        for inv in invokers:
            inv.close()


@pytest.fixture(params=list(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("channel", ["msg", "shm", "sem", "mq"])
def test_a_secret_left_in_an_ipc_object_is_gone(start, mode, profile, channel):
    warm = start("ipc_channels", mode, profile)
    assert warm.result({"op": "peek", "channel": channel})["found"] is None
    assert warm.result({"op": "leave", "channel": channel, "secret": "4242"}) == {"left": True}
    found = warm.result({"op": "peek", "channel": channel})["found"]
    assert found == ("4242" if mode == "baseline" else None), found


@pytest.mark.parametrize("channel", ["keyring_user", "keyring_session", "keyring_user_session"])
def test_keyrings_are_refused_to_every_request(start, mode, profile, channel):
    # Both profiles refuse keyctl and add_key: no request can store a key, so there is
    # nothing for the runtime to clear (it tries, and is refused too).
    warm = start("ipc_channels", mode, profile)
    left = warm.result({"op": "leave", "channel": channel, "secret": "4242"})
    assert "Operation not permitted" in left.get("error", ""), left
    found = warm.result({"op": "peek", "channel": channel})["found"]
    assert "Operation not permitted" in found, found
    refused = warm.result({"op": "probe_keys"})
    assert refused == {"add_key": 1, "request_key": 1, "keyctl": 1}, refused  # EPERM


def test_no_marker_in_any_writable_place_survives_the_request(start, mode, profile):
    warm = start("writes_everywhere", mode, profile)
    s = "S3CR3T-" + secrets.token_hex(8)
    marked = warm.result({"op": "mark", "secret": s})
    assert marked["uid"] == 1001, marked  # the image's function user walked
    assert set(SCRATCH) <= set(marked["places"]), marked
    assert any(p.startswith("/action/") for p in marked["places"]), marked
    found = warm.result({"op": "find", "secret": s})["places"]
    assert found == (marked["places"] if mode == "baseline" else []), found


def test_the_derived_set_and_its_cost_are_in_the_debug_log(start, profile):
    warm = start("writes_everywhere", "rewind", profile, env={"REWIND_DEBUG": "1"})
    act = warm.invoke({"op": "find", "secret": "x"})
    assert act.ok, act
    container = next(c for c in warm.invoker.containers if c.name == warm.container)
    _, stderr = container.logs()
    line = next(x for x in stderr.splitlines() if "rewind-sidecar: checkpoint" in x)
    writable = line.split("writable=")[1].split()[0].split(":")
    assert set(SCRATCH) <= set(writable) and "/home/rewind" in writable, line
    assert any(w.startswith("/action/") for w in writable), line
    walk_ms = float(line.split("walk_ms=")[1].split()[0])
    assert walk_ms < 5000, line  # measured: docs/FILES.md
