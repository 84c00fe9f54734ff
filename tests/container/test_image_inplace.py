"""In-place rewind in the image: with the shipped seccomp profile, and without it.

Docker's default seccomp profile forbids userfaultfd, so the in-place backend needs
core/python3Action/seccomp-userfaultfd.json. With it, `auto` picks inplace (one worker
serves every request); without it an explicit `inplace` fails /init with the reason,
and `auto` uses fork and says why, never serving without isolation.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewind_tools.invoker import ActionSpec, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"


def _invoker(image: str, profile: bool, memory: str = "inplace") -> Invoker:
    extra = ["--security-opt", f"seccomp={PROFILE}"] if profile else []
    return Invoker(image, memory_mb=256, env={"REWIND_MEMORY": memory}, extra_args=extra)


@pytest.fixture
def with_profile(runtime_image: str) -> Iterator[Invoker]:
    inv = _invoker(runtime_image, profile=True)
    yield inv
    inv.close()


@pytest.fixture
def without_profile(runtime_image: str) -> Iterator[Invoker]:
    inv = _invoker(runtime_image, profile=False)
    yield inv
    inv.close()


def test_inplace_with_the_seccomp_profile_rewinds_globals_and_files(with_profile):
    action = ActionSpec.from_path(ROOT / "tests" / "actions" / "leaks_global_state" / "main.py")
    first = secrets.token_hex(8)
    one = with_profile.invoke(action, {"secret": first})
    assert one.status == 200, (one.result, one.stderr)
    for i in range(3):
        act = with_profile.invoke(action, {"secret": f"later-{i}"})
        assert act.status == 200
        assert act.result == {"seen": [f"later-{i}"]}
        assert act.container == one.container


def test_inplace_without_the_profile_fails_init_with_the_reason(without_profile):
    action = ActionSpec.from_path(ROOT / "tests" / "actions" / "hello" / "main.py")
    act = without_profile.invoke(action, {"name": "x"})
    assert act.status == 502
    assert "userfaultfd" in act.stderr or "inplace" in act.stderr


@pytest.mark.parametrize("profile", [True, False])
def test_auto_picks_inplace_with_the_profile_and_fork_without_it(runtime_image, profile):
    inv = _invoker(runtime_image, profile=profile, memory="auto")
    try:
        action = ActionSpec.from_path(ROOT / "tests" / "actions" / "reports_pid" / "main.py")
        acts = [inv.invoke(action, {}) for _ in range(4)]
        assert all(a.status == 200 for a in acts), [(a.result, a.stderr) for a in acts]
        pids = {a.result["pid"] for a in acts}
        # inplace: one worker, rewound after every request; fork: a child per request.
        assert len(pids) == (1 if profile else 4), pids
    finally:
        inv.close()
