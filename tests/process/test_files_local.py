"""File rewind inside the runtime (REWIND_FILES=local) through `rewind serve`.

`rewind serve` gives the runtime a private /tmp in its own mount namespace, so these
tests never touch the machine's /tmp. Every request must find /tmp and the action's
directory exactly as they were at the checkpoint.
"""

from __future__ import annotations

import os
import signal

import pytest

from rewind.runtime import SENTINEL


@pytest.fixture(params=["fork", "none"])
def memory(request):
    return request.param


def start(serve, memory):
    rt = serve(memory=memory, files="local")
    resp = rt.init("mutates_files")
    assert resp.status == 200, (resp.body, rt.stderr())
    return rt


def test_every_kind_of_change_is_undone_before_the_next_request(serve, memory):
    rt = start(serve, memory)
    before = rt.run({}).json()["manifest"]
    assert "/tmp/to_modify.txt" in before and any(p.endswith("main__.py") for p in before)
    for _ in range(3):
        assert rt.run({"op": "mutate", "count": 20}).json() == {"mutated": True}
        after = rt.run({}).json()["manifest"]
        assert after == before


def test_the_next_request_never_sees_a_half_restored_tree(serve):
    rt = start(serve, "fork")
    before = rt.run({}).json()["manifest"]
    for _ in range(5):
        rt.run({"op": "mutate", "count": 2000})
        assert rt.run({}).json()["manifest"] == before


def _sidecar_pid(rt) -> int:
    for pid in rt.tree_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"rewind.sidecar" in fh.read():
                    return pid
        except FileNotFoundError:
            continue
    raise AssertionError("no sidecar process found")


def test_a_dead_sidecar_makes_the_runtime_refuse_requests(serve):
    rt = start(serve, "fork")
    assert rt.run({"op": "mutate"}).status == 200
    os.kill(_sidecar_pid(rt), signal.SIGKILL)
    # The rewind after the last reply may still have been running when the sidecar
    # died; either way at most one more request is served, and never on a dirty tree.
    responses = [rt.run({}) for _ in range(3)]
    statuses = [r.status for r in responses]
    assert statuses in ([503, 503, 503], [200, 503, 503]), statuses
    assert "clean state cannot be guaranteed" in responses[-1].json()["error"]
    status = rt.status()
    assert status["failed_closed"] and "sidecar" in status["fail_reason"], status
    rt.rt.stop()
    assert "refusing further requests" not in rt.stderr()  # debug log only


def test_file_rewind_is_quiet_in_the_logs(serve):
    rt = start(serve, "fork")
    for _ in range(3):
        rt.run({"op": "mutate"})
    rt.rt.stop()
    lines = [x for x in (rt.stdout() + rt.stderr()).splitlines() if x.strip() != SENTINEL]
    assert lines == []
