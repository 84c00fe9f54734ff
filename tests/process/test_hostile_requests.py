"""Hostile requests cost at most their own request: bodies that break the parser, results
with no UTF-8 form, and a request that plants code for the launcher's restart."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from rewind.memory.child import READING, TOOK
from rewind.memory.supervise import read_status

SECURE = ["fork", "inplace"]


def start(serve, action, **kw):
    rt = serve(**kw)
    resp = rt.init(action)
    assert resp.status == 200, (resp.body, rt.stderr())
    return rt


def nested(depth: int) -> bytes:
    return b'{"value": {"x": ' + b"[" * depth + b"]" * depth + b'}, "deadline": "9e15"}'


@pytest.mark.parametrize("memory", SECURE)
def test_a_body_nested_too_deep_for_the_parser_is_answered_and_the_next_request_works(
    serve, memory
):
    rt = start(serve, "echo", memory=memory)
    resp = rt.client.post("/run", nested(5000))
    assert resp.status in (200, 400), resp.body
    assert "error" in resp.json()
    assert rt.run({"after": 1}).json()["args"] == {"after": 1}


def test_a_request_process_that_dies_after_taking_its_request_is_reported_as_started():
    """Whatever kills a request process while it parses its request (the out-of-memory
    killer, a recursion overflow), the snapshot process knows the request was taken."""
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_r)
        os.write(status_w, READING + TOOK)
        os.kill(os.getpid(), signal.SIGKILL)
    os.close(status_w)
    pidfd = os.pidfd_open(pid)
    try:
        assert read_status(status_r, pidfd) == (TOOK, b"")
    finally:
        os.waitpid(pid, 0)
        os.close(pidfd)
        os.close(status_r)


def test_a_standby_process_that_dies_before_any_request_took_none():
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    os.close(status_w)
    pidfd = os.pidfd_open(pid)
    try:
        assert read_status(status_r, pidfd) == (b"", b"")
    finally:
        os.waitpid(pid, 0)
        os.close(pidfd)
        os.close(status_r)


@pytest.mark.parametrize("memory", ["none", *SECURE])
def test_a_result_with_a_lone_surrogate_is_valid_utf8_json(serve, memory):
    rt = start(serve, "returns_surrogate", memory=memory)
    resp = rt.run({})
    assert resp.status == 200
    text = resp.body.decode("utf-8")  # strict: raises on invalid UTF-8
    assert json.loads(text) == {"text": "a\ud800b", "ok": "é"}


@pytest.mark.parametrize("memory", SECURE)
@pytest.mark.parametrize("files", ["off", "local"])
def test_code_planted_for_the_launcher_restart_never_runs(serve, memory, files):
    """A request rewrites bin/exec to switch isolation off, then kills the snapshot
    process. Without file rewind the restarted launcher runs the planted script (the
    attack works: globals pile up); with it, the proxy rewinds the files first."""
    rt = start(serve, "plants_launcher", memory=memory, files=files)
    assert rt.run({}).json() == {"count": 1}
    resp = rt.run({"plant": True})
    assert resp.status == 400, resp.body  # the snapshot process died with the request
    counts = [rt.run({}).json()["count"] for _ in range(3)]
    if files == "off":
        assert counts == [1, 2, 3], "the planted launcher should have served (test is void)"
    else:
        assert counts == [1, 1, 1]


@pytest.mark.parametrize("memory", SECURE)
def test_request_processes_are_the_first_choice_of_the_oom_killer(serve, memory):
    rt = start(serve, "reports_oom_score", memory=memory)
    reply = rt.run({}).json()
    assert reply["own"] == 1000
    assert reply["parent"] < 1000  # the snapshot process


@pytest.mark.parametrize("memory", ["none", *SECURE])
def test_a_sentinel_printed_by_the_action_never_reaches_the_log_as_one(serve, memory):
    from rewind.runtime import SENTINEL

    rt = start(serve, "prints_sentinel", memory=memory)
    for _ in range(3):
        assert rt.run({}).json() == {"ok": True}
    time.sleep(0.2)
    out, err = rt.stdout(), rt.stderr()
    assert out.count(SENTINEL) == 3 and err.count(SENTINEL) == 3, (out, err)
    assert out.count("XXX-THE-END-OF-A-WHISK-ACTIVATION-XXX") == 6
    # Each activation's log ends at its own sentinel, on a line of its own: the action's
    # partial line comes before it.
    first = out.split(SENTINEL + "\n")[0]
    assert first.endswith("tail XXX-THE-END-OF-A-WHISK-ACTIVATION-XXX\n"), out


@pytest.mark.parametrize("memory", ["none", *SECURE])
def test_a_result_that_looks_like_a_runtime_status_is_the_actions_result(serve, memory):
    rt = start(serve, "returns_status_lookalike", memory=memory)
    for _ in range(2):
        resp = rt.run({})
        assert resp.status == 200, resp.body
        assert resp.json() == {"rewind_status": "exited", "error": "not really", "ok": True}


@pytest.mark.parametrize(
    "env",
    [{"A\x00B": "x"}, {"A": "x\x00y"}, {"BIG": "v" * (200 << 10)}],
    ids=["nul-in-name", "nul-in-value", "200KiB-value"],
)
def test_an_init_env_no_process_could_start_with_does_not_break_later_inits(serve, env):
    rt = serve(memory="fork")
    bad = rt.init("echo", env=env)
    assert bad.status == 400, bad.body
    good = rt.init("echo", env={"FINE": "1"})
    assert good.status == 200, good.body
    assert rt.run({"k": 1}).json()["args"] == {"k": 1}
