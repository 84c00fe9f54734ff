"""OpenWhisk's BasicActionRunnerTests checks that apply to `rewind serve` (no Docker).

The runtime prints nothing of its own: the streams hold the sentinels and the action's
own prints, nothing else (openwhisk-contract.md §6, §10). The container-level __OW_*
variables and `--env` reach the action, an import's output appears once, and a deadline
already past (or unparseable) is not enforced. The status endpoint says which backend
runs, and the same bytes whatever requests ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewind.runtime import SENTINEL

ROOT = Path(__file__).resolve().parents[2]
REWIND = [sys.executable, "-m", "rewind.cli"]
# The snapshot-taking backends (auto is inplace on this kernel) and the baseline.
BACKENDS = ["auto", "fork", "inplace", "none"]


def start(serve, action: str, memory: str = "auto", init_env: dict | None = None, **kw):
    rt = serve(memory=memory, **kw)
    resp = rt.init(action, main="niam" if action == "ow_entry_point" else "main", env=init_env)
    assert resp.status == 200, (resp.body, rt.stderr())
    return rt


def streams(rt) -> tuple[str, str]:
    """(stdout, stderr) of the runtime so far."""
    return rt.stdout(), rt.stderr()


def without_sentinels(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() != SENTINEL]


@pytest.mark.parametrize("memory", BACKENDS)
def test_echo_of_four_argument_sets_logs_only_the_actions_prints(serve, memory):
    rt = start(serve, "ow_echo", memory)
    args = [{}, {"x": 1}, {"s": "a b", "l": [1, 2]}, {"nested": {"k": None}}]
    for value in args:
        resp = rt.run(value)
        assert (resp.status, resp.json()) == (200, value)
    out, err = streams(rt)
    assert (out.count(SENTINEL + "\n"), err.count(SENTINEL + "\n")) == (4, 4)
    assert without_sentinels(out) == ["hello stdout"] * 4
    assert without_sentinels(err) == ["hello stderr"] * 4


@pytest.mark.parametrize("debug", ["0", "false", "no", "", "off"])
def test_debug_variables_that_mean_off_keep_the_runtime_quiet(serve, debug):
    rt = start(serve, "hello", "auto", env={"REWIND_DEBUG": debug, "OW_DEBUG": debug})
    assert rt.run({"name": "q"}).status == 200
    out, err = streams(rt)
    assert without_sentinels(out) == ["hello q"]
    assert without_sentinels(err) == []


def test_rewind_debug_on_logs_the_backend_choice(serve):
    rt = start(serve, "hello", "fork", env={"REWIND_DEBUG": "1"})
    assert "rewind: memory backend fork (REWIND_MEMORY=fork)" in rt.stderr()


def test_non_object_result_is_502_with_empty_streams(serve):
    rt = start(serve, "returns_non_dict", "auto")
    resp = rt.run({})
    assert resp.status == 502
    assert resp.json() == {"error": "The action did not return a dictionary or array."}
    out, err = streams(rt)
    assert (out.count(SENTINEL), err.count(SENTINEL)) == (1, 1)
    assert without_sentinels(out + err) == []


def test_second_init_is_refused_logged_and_writes_no_sentinel(serve):
    rt = start(serve, "hello", "auto")
    resp = rt.init("hello")
    assert resp.status == 403
    assert resp.json() == {"error": "Cannot initialize the action more than once."}
    out, err = streams(rt)
    assert SENTINEL not in out + err
    assert out == ""
    (line,) = err.splitlines()
    assert line.endswith(" Cannot initialize the action more than once.")


def test_non_default_entry_point(serve):
    rt = start(serve, "ow_entry_point", "auto")
    assert rt.run({}).json() == {"result": "it works"}


def test_unicode_in_source_arguments_logs_and_result(serve):
    rt = start(serve, "prints_unicode", "auto")
    resp = rt.run({"delimiter": "❄"})
    assert resp.json() == {"winter": "❄ ❄ ❄"}
    assert without_sentinels(rt.stdout()) == ["❄ ✓ ünïcödé"]
    assert without_sentinels(rt.stderr()) == []


def test_init_env_is_visible_at_import(serve):
    rt = start(serve, "ow_env_at_import", "auto", {"SOME_VAR": "xyz", "ANOTHER_VAR": ""})
    assert rt.run({}).json() == {"SOME_VAR": "xyz", "ANOTHER_VAR": ""}
    assert without_sentinels(rt.stdout() + rt.stderr()) == []


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_api_host_of_the_environment_reaches_the_action(serve, memory, monkeypatch):
    # rewind serve takes __OW_* from its own environment, as the image's proxy does.
    monkeypatch.setenv("__OW_API_HOST", "https://api.example:443")
    rt = start(serve, "ow_context", memory)
    ctx = {
        "api_key": "uuid:key",
        "namespace": "guest",
        "action_name": "/guest/ctx",
        "action_version": "0.0.7",
        "activation_id": "a1b2",
    }
    got = rt.run({}, **ctx).json()
    assert got.pop("api_host") == "https://api.example:443"
    assert got.pop("deadline").isdigit()
    assert got == ctx


def test_serve_env_is_a_default_init_env_under_the_inits_own(serve):
    from rewind.runtime import LocalRuntime, ServeOptions, free_port

    opts = ServeOptions(port=free_port(), memory="fork", files="off")
    opts.init_env = {"SOME_VAR": "from-serve", "ANOTHER_VAR": "from-serve"}
    with LocalRuntime(opts, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as rt:
        rt.wait_ready()
        src = (ROOT / "tests" / "actions" / "ow_env_at_import" / "main.py").read_text()
        assert rt.client.init(src, env={"ANOTHER_VAR": ""}).status == 200
        assert rt.client.run({}).json() == {"SOME_VAR": "from-serve", "ANOTHER_VAR": ""}


def test_invoke_env_fills_inits_env_and_api_host_passes_through(tmp_path):
    env = dict(os.environ, __OW_API_HOST="https://h.example")
    proc = subprocess.run(
        [
            *REWIND,
            "invoke",
            str(ROOT / "tests" / "actions" / "ow_env_at_import" / "main.py"),
            "--env",
            "SOME_VAR=x=y z",
            "-e",
            "ANOTHER_VAR=",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"SOME_VAR": "x=y z", "ANOTHER_VAR": ""}
    assert proc.stderr == ""
    proc = subprocess.run(
        [*REWIND, "invoke", str(ROOT / "tests" / "actions" / "ow_context" / "main.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert json.loads(proc.stdout)["api_host"] == "https://h.example", proc.stderr


@pytest.mark.parametrize("memory", BACKENDS)
def test_what_the_action_prints_at_import_appears_once_in_inits_log(serve, memory):
    rt = start(serve, "prints_at_import", memory)
    at_init = rt.stdout() + rt.stderr()
    for _ in range(3):
        assert rt.run({}).json() == {"ok": True}
    out, err = streams(rt)
    assert out.count("printed at import on stdout") == 1
    assert out.count("written at import to stdout.buffer") == 1
    assert err.count("printed at import on stderr") == 1
    assert "printed at import on stdout" in at_init  # logged with /init, not a request
    assert out.count("printed by the request") == 3


@pytest.mark.parametrize("memory", ["fork", "inplace", "none"])
def test_a_deadline_already_past_is_not_enforced(serve, memory):
    rt = start(serve, "ow_echo", memory)
    resp = rt.run({"x": 1}, deadline="123")
    assert (resp.status, resp.json()) == (200, {"x": 1})


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_a_future_deadline_is_still_enforced(serve, memory):
    rt = start(serve, "sleeps_forever", memory)
    resp = rt.run({"sleep": 30}, deadline_s=1.0)
    assert "exceeded its deadline" in resp.json()["error"]
    assert rt.run({}).json() == {"slept": 0}


@pytest.mark.parametrize("memory", ["fork", "inplace"])
@pytest.mark.parametrize(
    "deadline", ["NaN", "-Infinity", "Infinity", "abc", "", "1e400", "9" * 40, 1e300, True]
)
def test_an_unparseable_deadline_is_absent_and_crashes_nothing(serve, memory, deadline):
    rt = start(serve, "sleeps_forever", memory)
    resp = rt.run({"sleep": 0.2}, deadline=deadline)
    assert (resp.status, resp.json()) == (200, {"slept": 0.2})
    assert rt.run({}).json() == {"slept": 0}  # the runtime still serves
    assert without_sentinels(rt.stdout() + rt.stderr()) == []


@pytest.mark.parametrize("memory", ["fork", "inplace"])
@pytest.mark.parametrize("deadline", [None, [1], {"ms": 1}])
def test_a_deadline_of_the_wrong_type_is_an_error_result_not_a_crash(serve, memory, deadline):
    rt = start(serve, "sleeps_forever", memory)
    resp = rt.run({}, deadline=deadline)
    assert resp.status == 200 and "'deadline' must be a string" in resp.json()["error"]
    assert rt.run({}, deadline="123").json() == {"slept": 0}
    assert without_sentinels(rt.stdout() + rt.stderr()) == []


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_a_deadline_nested_5000_deep_crashes_nothing(serve, memory):
    rt = start(serve, "sleeps_forever", memory)
    body = '{"value": {}, "deadline": ' + "[" * 5000 + "]" * 5000 + "}"
    resp = rt.client.post("/run", body)
    assert resp.status == 200 and "nested too deeply" in resp.json()["error"], resp.body
    assert rt.run({}).json() == {"slept": 0}
    assert without_sentinels(rt.stdout() + rt.stderr()) == []


def test_status_says_which_backend_runs_and_never_changes_with_requests(serve):
    rt = start(serve, "leaks_global_state", "auto", files="off")
    before = rt.client.get("/rewind/status")
    assert before.status == 200
    status = before.json()
    assert status["initialized"] and status["reported"] and not status["failed_closed"]
    assert (status["memory"], status["checkpoint"], status["files"]) == ("inplace", "init", "off")
    for value in ({"secret": "a" * 1000}, {}, {"secret": "b"}):
        rt.run(value)
        rt.client.post("/run", "not json")
        assert rt.client.get("/rewind/status").body == before.body
    assert rt.client.post("/rewind/status", {}).status == 405


def test_status_reports_why_auto_fell_back(serve):
    rt = start(serve, "uses_threads", "auto")
    status = rt.status()
    assert status["memory"] == "fresh"
    assert "threads are alive" in status["reason"]
    assert without_sentinels(rt.stdout() + rt.stderr()) == []


def test_the_launcher_runs_behind_upstream_proxy_semantics(tmp_path):
    # Upstream's proxy gives the launcher only __OW_* and /init's env (no REWIND_STATUS_FD),
    # fd 3 for replies, and decodes the ack into {"ok": bool}, ignoring other fields.
    (tmp_path / "main__.py").write_text(
        (ROOT / "tests/actions/prints_at_import/main.py").read_text()
    )
    out_r, out_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewind.launcher", "--main", "main"],
        cwd=tmp_path,
        env={"__OW_WAIT_FOR_ACK": "1", "__OW_API_HOST": "h", "REWIND_MEMORY": "fork"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(out_w, 3),  # 3 survives close_fds; preexec_fn puts out_w there
        preexec_fn=lambda: os.dup2(out_w, 3),
    )
    os.close(out_w)
    replies = os.fdopen(out_r, "rb")
    ack = json.loads(replies.readline())
    assert ack["ok"] is True and ack["rewind"]["memory"] == "fork"
    assert proc.stdin is not None
    for deadline in ("123", str(int((time.time() + 60) * 1000))):
        proc.stdin.write(json.dumps({"value": {}, "deadline": deadline}).encode() + b"\n")
        proc.stdin.flush()
        assert json.loads(replies.readline()) == {"ok": True}
    out, err = proc.communicate(timeout=30)  # EOF on stdin: the launcher exits
    assert proc.returncode == 0
    assert out.decode().count("printed at import on stdout") == 1
    assert out.decode().count("printed by the request") == 2
    assert err.decode() == "printed at import on stderr\n"
    replies.close()
