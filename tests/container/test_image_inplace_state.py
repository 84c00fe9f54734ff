"""Per-process kernel state in the image, as the unprivileged function user.

A few of tests/process/test_inplace_process_state.py's attacks, in real containers:
`none` (where they succeed, so the test can fail), `fork` under Docker's default seccomp
profile, and `inplace` under the shipped profile (core/python3Action/seccomp-userfaultfd.json,
which it needs). Under inplace the reasons for replacing a worker stay out of the logs.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from rewind_tools.invoker import ActionSpec, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"
ACTIONS = ROOT / "tests" / "actions"
# memory backend -> seccomp profile (None: Docker's default)
BACKENDS = {"none": PROFILE, "fork": None, "inplace": PROFILE}
ATTACKS = ["timerslack", "nice", "rlimit_soft", "comm", "itimer_virtual", "mlockall", "seccomp"]


def _invoker(image: str, memory: str) -> Invoker:
    profile = BACKENDS[memory]
    extra = ["--security-opt", f"seccomp={profile}"] if profile else []
    return Invoker(image, memory_mb=256, env={"REWIND_MEMORY": memory}, extra_args=extra)


def _value(act):
    return act.result if act.ok else f"failed: {act.status}"


@pytest.mark.parametrize("memory", list(BACKENDS))
@pytest.mark.parametrize("op", ATTACKS)
def test_kernel_state_of_a_request_does_not_reach_the_next(runtime_image, memory, op):
    action = ActionSpec.from_path(ACTIONS / "state_attacks" / "main.py")
    inv = _invoker(runtime_image, memory)
    try:
        before = _value(inv.invoke(action, {"op": op, "do": "get"}))
        assert isinstance(before, dict), before
        inv.invoke(action, {"op": op, "do": "set", "secret": "S3CR3T-" + secrets.token_hex(8)})
        after = inv.invoke(action, {"op": op, "do": "get"})
        leaked = _value(after) != before
        assert leaked == (memory == "none"), (memory, op, before, _value(after), after.stderr)
        if memory != "none":
            health = inv.invoke(action, {"do": "health"})
            assert health.result == {"fork": 0, "allocated": True}, (health.result, health.stderr)
            assert "worker" not in after.stderr + health.stderr
    finally:
        inv.close()


@pytest.mark.parametrize("memory", list(BACKENDS))
def test_a_lying_seccomp_filter_does_not_keep_a_pipe_with_a_secret(runtime_image, memory):
    action = ActionSpec.from_path(ACTIONS / "state_seccomp_lies" / "main.py")
    inv = _invoker(runtime_image, memory)
    try:
        s = "S3CR3T-" + secrets.token_hex(8)
        planted = inv.invoke(action, {"do": "plant", "secret": s})
        assert planted.ok and planted.result["filter"] == 0, (planted.result, planted.stderr)
        peek = inv.invoke(action, {"do": "peek", "fd": planted.result["fd"]})
        assert peek.ok, (peek.result, peek.stderr)
        assert (s in peek.result["found"]) == (memory == "none"), peek.result
        if memory != "none":
            assert peek.result["umask"] != 0o077 and peek.result["usr2_default"], peek.result
            assert "worker" not in peek.stderr
    finally:
        inv.close()
