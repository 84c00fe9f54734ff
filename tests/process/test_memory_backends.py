"""Backend behaviour through `rewind serve`: crashes, deadlines, policies, threads, soak."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def start(serve, action, **kw):
    rt = serve(**kw)
    resp = rt.init(action)
    assert resp.status == 200, (resp.body, rt.stderr())
    return rt


REWINDING = ["fork", "inplace"]


@pytest.mark.parametrize("memory", REWINDING)
@pytest.mark.parametrize("how", ["os._exit", "segfault", "sigkill", "sys.exit"])
def test_a_crashing_request_costs_one_request_never_the_container(serve, how, memory):
    rt = start(serve, "crashes", memory=memory)
    pid_before = rt.tree_pids()
    resp = rt.run({"how": how})
    assert (resp.status, resp.json()) == (400, {"error": "command exited"})
    assert rt.run({"how": "none"}).json() == {"ok": True}
    # The snapshot process survived: the launcher was not restarted.
    assert set(pid_before[:2]) <= set(rt.tree_pids())


@pytest.mark.parametrize("memory", REWINDING)
def test_a_request_exhausting_memory_gets_an_error_and_the_next_works(serve, memory):
    rt = start(serve, "crashes", memory=memory)
    resp = rt.run({"how": "memory"})
    assert resp.status in (200, 400)
    assert "error" in resp.json()
    assert rt.run({"how": "none"}).json() == {"ok": True}


@pytest.mark.parametrize("memory", REWINDING)
def test_a_request_past_its_deadline_is_stopped_and_the_next_works(serve, memory):
    rt = start(serve, "sleeps_forever", memory=memory)
    began = time.monotonic()
    resp = rt.run({"sleep": 30}, deadline_s=1.0)
    assert time.monotonic() - began < 10
    assert resp.status == 200
    assert "exceeded its deadline" in resp.json()["error"]
    assert rt.run({}).json() == {"slept": 0}


def test_warmup_policy_runs_the_action_once_before_the_snapshot(serve):
    rt = start(
        serve, "counts_warmups", memory="fork", checkpoint="warmup", warmup='{"warmup": true}'
    )
    for _ in range(3):
        assert rt.run({}).json() == {"warm": 1, "runs": 1}


def test_a_failing_warmup_fails_init(serve):
    rt = serve(memory="fork", checkpoint="warmup", warmup='{"warmup": true}')
    assert rt.init("fails_warmup").status == 502
    assert "warm-up" in rt.stderr()


def test_first_request_policy_keeps_the_first_requests_state_in_every_later_one(serve):
    rt = start(serve, "leaks_global_state", memory="fork", checkpoint="first-request")
    rt.run({"secret": "first"})
    for i in range(3):
        assert rt.run({"secret": f"later-{i}"}).json()["seen"] == ["first", f"later-{i}"]


def test_auto_with_threads_alive_falls_back_to_a_fresh_process_and_logs_why(serve):
    rt = start(serve, "uses_threads", memory="auto")
    for _ in range(3):
        assert rt.run({}).json()["seen"] == 1
    status = rt.status()
    assert status["memory"] == "fresh", status
    assert "threads are alive at the checkpoint" in status["reason"]


def test_explicit_fork_with_threads_alive_fails_init_clearly(serve):
    rt = serve(memory="fork")
    assert rt.init("uses_threads").status == 502
    assert "fork would silently lose them" in rt.stderr()


def test_explicit_kernel_on_this_stock_kernel_fails_init_clearly(serve):
    rt = serve(memory="kernel")
    assert rt.init("hello").status == 502
    assert "REWIND kernel is absent" in rt.stderr()


def test_auto_on_this_stock_kernel_uses_inplace(serve):
    rt = start(serve, "leaks_global_state", memory="auto")
    rt.run({"secret": "a"})
    assert rt.run({"secret": "b"}).json()["seen"] == ["b"]
    # The snapshot process (the proxy's child) keeps one worker: the inplace layout.
    (launcher,) = rt.children()
    assert len(rt.children(launcher)) == 1
    assert rt.status()["memory"] == "inplace"


def _rewound_mappings(rt) -> int:
    """Lines of /proc/<pid>/maps of the inplace worker (the launcher's only child)."""
    (launcher,) = rt.children()
    (worker,) = rt.children(launcher)
    with open(f"/proc/{worker}/maps") as fh:
        return len(fh.readlines())


# `fresh` starts an interpreter per request (~60 ms): 200 requests keep the suite short.
@pytest.mark.parametrize(
    ("memory", "count"), [("none", 2000), ("fork", 2000), ("inplace", 2000), ("fresh", 200)]
)
def test_soak_two_thousand_requests_stay_clean_with_flat_memory(serve, memory, count):
    rt = start(serve, "leaks_global_state", memory=memory)
    for i in range(50):
        rt.run({"secret": i})
    before = rt.tree_memory_kib()
    maps_before = _rewound_mappings(rt) if memory == "inplace" else 0
    dirty = 0
    for i in range(count):
        seen = rt.run({"secret": i}).json()["seen"]
        dirty += seen != [i]
    after = rt.tree_memory_kib()
    maps_after = _rewound_mappings(rt) if memory == "inplace" else 0
    print(
        f"\n{memory}: tree RSS {before['rss']} -> {after['rss']} KiB, "
        f"PSS {before['pss']} -> {after['pss']} KiB"
    )
    if memory == "none":
        assert dirty == count
        return
    assert dirty == 0
    assert after["rss"] - before["rss"] < 8 * 1024
    assert after["pss"] - before["pss"] < 8 * 1024
    if memory == "inplace":
        assert maps_after == maps_before, (maps_before, maps_after)


def _metric_rows(path):
    import json

    return [json.loads(x) for x in path.read_text().splitlines() if x]


def test_prefaulting_keeps_requests_clean_and_takes_their_faults_off_the_request(serve, tmp_path):
    """With REWIND_PREFAULT=on the standby writes the pages recent requests wrote."""
    results = {}
    for prefault in ("off", "on"):
        metrics = tmp_path / f"metrics-{prefault}.jsonl"
        rt = serve(
            memory="fork",
            env={"REWIND_PREFAULT": prefault, "REWIND_METRICS_FILE": str(metrics)},
        )
        source = (Path(__file__).parents[2] / "bench" / "workloads" / "bigheap.py").read_text()
        assert rt.client.init(source).status == 200
        for _ in range(24):
            time.sleep(0.05)  # the standby prefaults between requests
            assert rt.run({"pages": 500}).json() == {"pages": 500}
        rt.rt.stop()
        faults = [r["request_faults"] for r in _metric_rows(metrics)[10:]]
        results[prefault] = sorted(faults)[len(faults) // 2]
    print(f"\nrequest page faults: prefault off {results['off']}, on {results['on']}")
    assert results["off"] >= 500
    assert results["on"] < results["off"] / 4


def test_prefaulting_does_not_leak_between_requests(serve):
    rt = start(serve, "leaks_global_state", memory="fork", env={"REWIND_PREFAULT": "on"})
    for i in range(20):
        assert rt.run({"secret": i}).json()["seen"] == [i]
