"""The snapshot process is out of a request's reach in the image (its two users).

The image runs the proxy as root, the snapshot process as ``rewind-snapshot`` and every
request process as ``rewind`` with no capability. A request tries to prlimit, renice,
re-pin, reschedule and re-prioritise the snapshot process (its parent), then to stop
it and to kill it: every attempt is refused, later requests see the defaults, and the
same container and launcher keep serving. Under ``REWIND_MEMORY=none`` the request's
process is the snapshot: the same attacks on itself work and the changes stay, which
shows the test can fail. Both with Docker's default seccomp profile and with the shipped
one (``inplace`` only with the shipped one: the default forbids userfaultfd).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import ActionSpec, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"
ACTION = ActionSpec.from_path(ROOT / "tests" / "actions" / "attacks_snapshot_state" / "main.py")
SOFT_ATTACKS = ["prlimit", "nice", "affinity", "sched", "ioprio"]
STATE_KEYS = ["nofile", "nice", "affinity", "policy", "ioprio"]
FUNCTION_UID, SNAPSHOT_UID = 1001, 1002  # the Dockerfile's REWIND_UID, REWIND_SNAPSHOT_UID

CASES = [
    ("default", "auto"),  # fork: the default profile has no userfaultfd
    ("default", "fork"),
    ("shipped", "auto"),  # inplace
    ("shipped", "fork"),
    ("shipped", "inplace"),
]


class Warm:
    """One warm container of one invoker, serving the attack action."""

    def __init__(self, image: str, profile: str, memory: str) -> None:
        extra = ["--security-opt", f"seccomp={PROFILE}"] if profile == "shipped" else []
        self.inv = Invoker(image, memory_mb=256, env={"REWIND_MEMORY": memory}, extra_args=extra)
        self.container = ""

    def call(self, params: dict[str, Any]) -> Any:
        act = self.inv.invoke(ACTION, params, 30)
        assert act.status == 200 and isinstance(act.result, dict), (act.result, act.stderr)
        if self.container:
            assert act.container == self.container, "the warm container was replaced"
        self.container = act.container
        return act.result

    def observe(self) -> dict[str, Any]:
        return dict(self.call({"op": "observe"}))


@pytest.fixture
def warm(runtime_image: str) -> Iterator[Any]:
    made: list[Warm] = []

    def start(profile: str, memory: str) -> Warm:
        w = Warm(runtime_image, profile, memory)
        made.append(w)
        return w

    yield start
    for w in made:
        w.inv.close()


def _state(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k] for k in STATE_KEYS}


@pytest.mark.parametrize(("profile", "memory"), CASES)
def test_requests_cannot_reach_the_snapshot_process(warm, profile, memory):
    w = warm(profile, memory)
    first = w.observe()
    status = first["status"]
    assert status["Uid"] == [str(FUNCTION_UID)] * 4, status
    assert status["Gid"] == [str(FUNCTION_UID)] * 4, status  # --user-group: gid = uid
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[key][0], 16) == 0, (key, status)
    assert first["parent_uid"] == [SNAPSHOT_UID] * 3, first
    # inplace (asked for, or auto's choice with the shipped profile) keeps one worker.
    inplace = memory == "inplace" or (memory, profile) == ("auto", "shipped")
    assert (w.observe()["pid"] == first["pid"]) == inplace
    before = _state(first)
    attack = w.call({"op": "attack", "target": "parent", "how": SOFT_ATTACKS})
    assert set(attack["results"].values()) == {"EPERM"}, attack
    assert [_state(w.observe()) for _ in range(2)] == [before, before]
    for how in ("stop", "kill"):
        assert w.call({"op": "attack", "target": "parent", "how": [how]})["results"] == {
            how: "EPERM"
        }
        assert _state(w.observe()) == before
    # The same snapshot process still serves: it was neither replaced nor restarted.
    assert w.call({"op": "attack", "target": "parent", "how": []})["target"] == attack["target"]


def test_under_none_the_attacks_work_and_persist(warm):
    # The request's process is the snapshot itself: the attacks reach it and stay.
    w = warm("default", "none")
    before = _state(w.observe())
    attack = w.call({"op": "attack", "target": "self", "how": SOFT_ATTACKS})
    assert set(attack["results"].values()) == {"ok"}, attack
    after = _state(w.observe())
    one_cpu = len(before["affinity"]) == 1
    changed = [k for k in STATE_KEYS if after[k] != before[k]]
    assert changed == [k for k in STATE_KEYS if k != "affinity" or not one_cpu]


def test_the_image_has_both_users():
    # Guards the constants above against the Dockerfile drifting.
    text = (ROOT / "core" / "python3Action" / "Dockerfile").read_text()
    assert f"REWIND_UID={FUNCTION_UID}" in text and f"REWIND_SNAPSHOT_UID={SNAPSHOT_UID}" in text
    assert "REWIND_SNAPSHOT_USER=rewind-snapshot" in text
