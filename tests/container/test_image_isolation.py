"""Isolation of the runtime image, attacked in real containers through the invoker emulator.

The attacks of tests/process/test_isolation.py and test_files_local.py (the same actions
under tests/actions/), run here against containers of the image the way OpenWhisk runs
them: one warm container serves every request of a test. Each attack runs twice:

- ``baseline``: ``REWIND_MEMORY=none`` + ``REWIND_FILES=off``, plain warm reuse — the
  attack must SUCCEED there, which shows it really attacks something;
- ``rewind``: the image's defaults (``REWIND_MEMORY=auto``, fork on this kernel,
  ``REWIND_FILES=local``) — the attack must FAIL there.

Then what the defaults alone promise: flat container memory over 500 requests (measured
from the host, never from inside), a request that exhausts the container's memory or
passes its deadline costs that request only, and killing the snapshot process costs at
most one request.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import ActionSpec, Activation, Container, HttpReply, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "tests" / "actions"
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
MIB = 1 << 20

MODES: dict[str, dict[str, str]] = {
    "baseline": {"REWIND_MEMORY": "none", "REWIND_FILES": "off"},
    "rewind": {},  # the image's defaults
}


def action(name: str) -> ActionSpec:
    """tests/actions/<name>/main.py as a source action."""
    return ActionSpec(code=(ACTIONS / name / "main.py").read_text(), name=name)


def secret() -> str:
    return "S3CR3T-" + secrets.token_hex(12)


def expect_leak(mode: str, leaked: bool) -> None:
    """The attack works against the baseline and nowhere else."""
    assert leaked == (mode == "baseline"), f"{mode}: leaked={leaked}"


class Warm:
    """One action served by one warm container of one invoker.

    :meth:`invoke` goes through the invoker (warm-pool reuse, log collection) and checks
    the same container answered; :meth:`post` sends a ``/run`` straight to that container,
    for requests whose non-200 answer would make the invoker destroy it.
    """

    def __init__(self, invoker: Invoker, spec: ActionSpec) -> None:
        self.invoker = invoker
        self.spec = spec
        self.container: Container | None = None

    def invoke(
        self, params: Any = None, *, timeout_s: float = 30, spec: ActionSpec | None = None
    ) -> Activation:
        activation = self.invoker.invoke(spec or self.spec, params, timeout_s)
        if self.container is None:
            assert activation.ok, activation
            self.container = next(
                c for c in self.invoker.containers if c.name == activation.container
            )
        assert activation.container == self.container.name, "the warm container was replaced"
        return activation

    def result(self, params: Any = None) -> Any:
        """The result of an invocation that must succeed."""
        activation = self.invoke(params)
        assert activation.ok, activation
        return activation.result

    def post(self, params: Any = None, *, deadline_s: float = 30, wait_s: float = 30) -> HttpReply:
        """``/run`` to this container with ``deadline`` ``deadline_s`` from now, waiting up
        to ``wait_s`` for the reply; consumes this activation's logs."""
        assert self.container is not None, "invoke() first"
        body = self.invoker.run_body(self.spec, params, deadline_s)
        reply = self.container.post("/run", body, wait_s)
        self.container.collect_logs(5.0)
        return reply


@pytest.fixture
def start(runtime_image: str) -> Iterator[Callable[..., Warm]]:
    """``start(name, mode, **invoker_kw)``: an invoker for ``mode`` and the action
    tests/actions/<name> warm in one of its containers (one cold request made)."""
    invokers: list[Invoker] = []

    def _start(name: str, mode: str, *, params: Any = None, **kw: Any) -> Warm:
        env = {**MODES[mode], **kw.pop("env", {})}
        inv = Invoker(runtime_image, memory_mb=kw.pop("memory_mb", 256), env=env, **kw)
        invokers.append(inv)
        warm = Warm(inv, action(name))
        first = warm.invoke({} if params is None else params)
        assert first.cold and first.ok, first
        return warm

    try:
        yield _start
    finally:
        for inv in invokers:
            inv.close()


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# -- memory --------------------------------------------------------------------------------


def test_a_module_global_does_not_reach_the_next_request(start, mode):
    warm = start("leaks_global_state", mode, params={"secret": "first"})
    s = secret()
    warm.result({"secret": s})
    seen = warm.result({"secret": "other"})["seen"]
    expect_leak(mode, s in seen)


def test_no_heap_residue_of_a_secret_is_readable_by_the_next_request(start, mode):
    warm = start("heap_residue", mode, params={"op": "plant", "secret": secret()})
    s = secret()
    warm.result({"op": "plant", "secret": s})
    out = warm.result({"op": "scan", "shifted": [b + 1 for b in s.encode()]})
    assert out["scanned"] > MIB  # the scan really read the request process's memory
    expect_leak(mode, out["found"] > 0)


def test_environment_python_and_c_level_is_rewound(start, mode):
    warm = start("leaks_environ", mode)
    s = secret()
    warm.result({"secret": s})
    out = warm.result({})
    assert (out["python"] == s) == (out["c"] == s)
    expect_leak(mode, out["python"] == s)


def test_api_key_of_the_previous_caller_is_not_visible(start, mode):
    warm = start("leaks_environ", mode)
    key = "caller-a:" + secrets.token_hex(16)
    warm.invoker.api_key = key
    assert warm.result({})["api_key"] == key
    # The next caller's activation carries no key (an action without one).
    anonymous = dataclasses.replace(warm.spec, provide_api_key=False)
    out = warm.invoke({}, spec=anonymous)
    assert out.ok, out
    expect_leak(mode, out.result["api_key"] == key)


def test_cwd_umask_signal_handlers_and_monkeypatching_are_rewound(start, mode):
    warm = start("leaks_process_state", mode)
    clean = warm.result({})
    assert clean["sigusr1_default"] and not clean["builtin_patched"]
    warm.result({"tamper": True, "secret": secret()})
    after = warm.result({})
    changed = {k for k in clean if clean[k] != after[k]}
    if mode == "baseline":
        assert changed == {"cwd", "umask", "sigusr1_default", "module_patched", "builtin_patched"}
    else:
        assert changed == set()


def test_threads_started_by_a_request_do_not_survive_it(start, mode):
    warm = start("leaks_thread", mode)
    s = secret()
    warm.result({"secret": s})
    names = warm.result({})["threads"]
    expect_leak(mode, any(s in n for n in names))


def _container_processes(container: Container) -> str:
    """``docker top``: the container's processes as the host sees them."""
    proc = subprocess.run(
        [DOCKER, "top", container.id, "-eo", "pid,args"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_children_and_detached_grandchildren_do_not_survive_a_request(start, mode):
    warm = start("leaks_child_process", mode)
    pids = warm.result({"op": "spawn"})["pids"]
    alive = warm.result({"op": "check", "pids": pids})["alive"]
    expect_leak(mode, bool(alive))
    expect_leak(mode, "sleep 600" in _container_processes(warm.container))


def test_open_descriptors_do_not_survive_a_request(start, mode):
    warm = start("leaks_descriptor", mode)
    warm.result({"path": "/etc/hostname"})
    targets = warm.result({})["targets"]
    expect_leak(mode, "/etc/hostname" in targets)


def _steal(start, mode: str, op: str, tmp_path: Path) -> bool:
    """Runs the ``op`` thief of steals_next_request, then a request carrying a secret;
    True when the thief got the secret. The thief writes what it reads to a host
    directory mounted outside the rewound paths."""
    tmp_path.chmod(0o777)
    loot = tmp_path / "stolen"
    loot.touch()
    loot.chmod(0o666)
    warm = start("steals_next_request", mode, extra_args=["-v", f"{tmp_path}:/loot"])
    warm.result({"op": op, "out": "/loot/stolen"})
    s = secret()
    assert warm.result({"secret": s}) == {"got": s}
    time.sleep(0.3)
    assert warm.result({"secret": "later"}) == {"got": "later"}
    return s.encode() in loot.read_bytes()


def test_a_relay_thread_on_stdin_cannot_read_the_next_request(start, mode, tmp_path):
    expect_leak(mode, _steal(start, mode, "relay", tmp_path))


# Only the defaults: under `none` a leftover process and the launcher race for the same
# pipe, so that attack succeeds only sometimes (the relay above always does).
def test_a_leftover_process_cannot_read_the_next_request(start, tmp_path):
    assert not _steal(start, "rewind", "daemon", tmp_path)


def test_extra_result_lines_cannot_forge_later_results(start, mode):
    warm = start("forges_result", mode)
    first = warm.post({"op": "forge", "n": 1})
    second, third = warm.post({"n": 2}), warm.post({"n": 3})
    replies = [(r.status, r.json()) for r in (second, third)]
    expect_leak(mode, any(body == {"forged": True} for _, body in replies))
    if mode == "rewind":
        assert first.status in (200, 400)
        assert replies == [(200, {"own": 2}), (200, {"own": 3})]
        assert warm.result({"n": 4}) == {"own": 4}


@pytest.mark.parametrize("op", ["kill", "term"])
def test_killing_the_snapshot_process_costs_at_most_one_request(start, op):
    warm = start("kills_snapshot", "rewind")
    killed = warm.post({"op": op})
    assert killed.status in (200, 400), killed
    # The runtime itself recovers in the same container ...
    for _ in range(3):
        reply = warm.post({})
        assert (reply.status, reply.json()["ok"]) == (200, True), reply
    # ... and the invoker keeps using it.
    assert warm.result({})["ok"] is True


# -- files ---------------------------------------------------------------------------------


def test_tmp_and_action_dir_changes_are_undone_before_the_next_request(start, mode):
    warm = start("mutates_files", mode)
    before = warm.result({})["manifest"]
    assert "/tmp/to_modify.txt" in before and any(p.endswith("main__.py") for p in before)
    action_dir = os.path.dirname(next(p for p in before if p.endswith("main__.py")))
    assert warm.result({"op": "mutate", "count": 20}) == {"mutated": True}
    after = warm.result({})["manifest"]
    written = ["/tmp/created/dir/f0", f"{action_dir}/new_in_action_dir.txt"]
    if mode == "baseline":
        assert all(p in after for p in written)
        assert after != before
        return
    assert not any(p in after for p in written)
    assert after == before


def test_home_changes_are_undone_before_the_next_request(start, mode):
    warm = start("mutates_home", mode)
    clean = warm.result({})
    home, before = clean["home"], clean["manifest"]
    assert home == "/home/rewind"
    assert f"{home}/to_modify.txt" in before and f"{home}/.bashrc" in before
    assert warm.result({"op": "mutate"}) == {"mutated": True}
    after = warm.result({})["manifest"]
    written = [f"{home}/new_in_home.txt", f"{home}/.cache/planted/secret.txt"]
    if mode == "baseline":
        assert all(p in after for p in written)
        assert after != before
        return
    assert not any(p in after for p in written)
    assert after == before


# -- resources -----------------------------------------------------------------------------

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 10**3, "MB": 10**6}
_UNITS["GB"] = 10**9


def docker_stats_memory(container: Container) -> int:
    """The container's memory use in bytes, as ``docker stats`` reports it."""
    proc = subprocess.run(
        [DOCKER, "stats", "--no-stream", "--format", "{{.MemUsage}}", container.id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.match(r"\s*([\d.]+)\s*([A-Za-z]+)\s*/", proc.stdout)
    assert match and match.group(2) in _UNITS, proc.stdout
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def host_cgroup_file(container: Container, v1: str, v2: str) -> Path | None:
    """The host's file ``v1`` (cgroup v1) or ``v2`` (cgroup v2) of the container's memory
    cgroup, under either cgroup driver; None when this host has neither."""
    cid = container.id
    for path in (
        f"/sys/fs/cgroup/memory/docker/{cid}/{v1}",
        f"/sys/fs/cgroup/memory/system.slice/docker-{cid}.scope/{v1}",
        f"/sys/fs/cgroup/docker/{cid}/{v2}",
        f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/{v2}",
    ):
        if os.path.exists(path):
            return Path(path)
    return None


def host_cgroup_memory(container: Container) -> int | None:
    """The container's memory cgroup usage in bytes, read on the host."""
    path = host_cgroup_file(container, "memory.usage_in_bytes", "memory.current")
    return None if path is None else int(path.read_text())


def host_oom_kills(container: Container) -> int | None:
    """How many processes the OOM killer killed in the container's cgroup."""
    path = host_cgroup_file(container, "memory.oom_control", "memory.events")
    if path is None:
        return None
    match = re.search(r"^oom_kill (\d+)$", path.read_text(), re.M)
    return None if match is None else int(match.group(1))


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MIB:.1f} MiB"


def test_container_memory_stays_flat_over_500_requests(start):
    warm = start("leaks_global_state", "rewind")
    container = warm.container
    assert container is not None
    filler = "x" * 4096  # every request keeps 4 KiB more in the global, under `none`

    def run(i: int) -> bool:
        value = f"{i}-{filler}"
        body = warm.invoker.run_body(warm.spec, {"secret": value}, 30)
        reply = container.post("/run", body, 30)
        assert reply.status == 200, reply
        return reply.json()["seen"] == [value]

    assert all(run(i) for i in range(20))  # past any one-time growth
    stats_before, cgroup_before = docker_stats_memory(container), host_cgroup_memory(container)
    clean = sum(run(i) for i in range(500))
    stats_after, cgroup_after = docker_stats_memory(container), host_cgroup_memory(container)
    print(
        f"\ncontainer memory over 500 requests: docker stats {_mib(stats_before)} -> "
        f"{_mib(stats_after)}, host cgroup {_mib(cgroup_before)} -> {_mib(cgroup_after)}"
    )
    assert clean == 500
    assert stats_after - stats_before < 10 * MIB
    if cgroup_before is not None and cgroup_after is not None:
        assert cgroup_after - cgroup_before < 10 * MIB
    assert warm.result({"secret": "last"})["seen"] == ["last"]


def test_a_request_exhausting_the_memory_limit_costs_only_that_request(start):
    warm = start("exhausts_memory", "rewind", memory_mb=256)
    assert warm.container is not None
    token = warm.result({})["token"]
    kills = host_oom_kills(warm.container)

    # Straight to the container: the runtime answers with an error and keeps serving.
    hog = warm.post({"hog": True})
    assert hog.status in (200, 400) and "error" in hog.json(), hog
    if kills is not None:
        assert host_oom_kills(warm.container) > kills  # the kernel's OOM killer did act
    # The snapshot survived: the next request runs in the same import of the action.
    assert warm.result({}) == {"token": token}

    # Through the invoker, as a user sees it: an error, then a working invocation.
    failed = warm.invoker.invoke(warm.spec, {"hog": True}, 30)
    assert "error" in failed.result, failed
    assert failed.developer_error or failed.application_error
    after = warm.invoker.invoke(warm.spec, {}, 30)
    assert after.ok and "token" in after.result, after


def test_a_request_past_its_deadline_is_stopped_and_the_next_works(start):
    warm = start("sleeps_forever", "rewind")
    began = time.monotonic()
    late = warm.post({"sleep": 3600}, deadline_s=1.0, wait_s=20)
    assert time.monotonic() - began < 5
    assert late.status == 200, late
    assert "exceeded its deadline" in late.json()["error"]
    assert warm.result({}) == {"slept": 0}
