"""The OpenWhisk action-container contract, walked through `rewind serve` point by point.

See ../shared/openwhisk-contract.md; deviations from upstream (404/405, 413, recovery
after a crash, queued overlapping runs, a clear 400 for invalid JSON) have their own tests.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile

import pytest

from rewind.runtime import SENTINEL

BACKENDS = ["none", "fork"]


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.mark.parametrize("memory", BACKENDS)
def test_init_then_runs_echo_and_each_run_ends_with_two_sentinels(serve, memory):
    rt = serve(memory=memory)
    resp = rt.init("echo")
    assert (resp.status, resp.json()) == (200, {"ok": True})
    for i in range(3):
        resp = rt.run({"i": i}, api_key="k")
        assert resp.status == 200
        assert resp.json()["args"] == {"i": i}
    rt.rt.stop()
    assert rt.stdout().count(SENTINEL) == 3
    assert rt.stderr().count(SENTINEL) == 3
    assert rt.stdout().count("stdout line") == 3
    assert rt.stderr().count("stderr line") == 3


def test_successful_init_writes_no_sentinel_and_proxy_prints_nothing(serve):
    rt = serve(memory="fork")
    assert rt.init("hello").status == 200
    rt.rt.stop()
    assert SENTINEL not in rt.stdout() + rt.stderr()
    assert rt.stdout() == ""


def test_activation_context_and_api_host_reach_the_action(serve):
    rt = serve(memory="fork", env={"__OW_API_HOST": "https://api.example"})
    assert rt.init("echo").status == 200
    env = rt.run({}, api_key="uuid:key", namespace="ns1").json()["env"]
    assert env["__OW_API_HOST"] == "https://api.example"
    assert env["__OW_API_KEY"] == "uuid:key"
    for key in (
        "NAMESPACE",
        "ACTION_NAME",
        "ACTION_VERSION",
        "ACTIVATION_ID",
        "TRANSACTION_ID",
        "DEADLINE",
    ):
        assert env[f"__OW_{key}"], key


def test_init_env_is_exported_before_the_action_is_imported(serve):
    rt = serve(memory="fork")
    code = (
        "import os\nVAL = os.environ.get('SOME_VAR')\nprint('at import', VAL)\n"
        "def main(a):\n    return {'some': VAL, 'another': os.environ.get('ANOTHER_VAR')}\n"
    )
    resp = rt.client.init(code, env={"SOME_VAR": "xyz", "ANOTHER_VAR": ""})
    assert resp.status == 200
    assert rt.run({}).json() == {"some": "xyz", "another": ""}


def test_non_default_entry_point_in_a_zip_with_a_helper_module_and_a_data_file(serve):
    rt = serve(memory="fork")
    archive = _zip(
        {
            "__main__.py": "from helper import greet\nimport os\n"
            "def niam(a):\n    return {'g': greet(), 'data': open('data.txt').read()}\n",
            "helper.py": "def greet():\n    return 'hi'\n",
            "data.txt": "file content",
        }
    )
    assert rt.client.init(archive, main="niam").status == 200
    assert rt.run({}).json() == {"g": "hi", "data": "file content"}


def test_zip_without_main_module_fails_init_with_a_logged_reason(serve):
    rt = serve(memory="fork")
    resp = rt.client.init(_zip({"other.py": "x = 1\n"}))
    assert resp.status == 502
    assert "failed to generate or locate a binary" in resp.json()["error"]
    assert "Zip file does not include" in rt.stderr()


def test_second_init_is_refused_and_logged_without_sentinels(serve):
    rt = serve(memory="fork")
    assert rt.init("hello").status == 200
    resp = rt.init("hello")
    assert resp.status == 403
    assert resp.json() == {"error": "Cannot initialize the action more than once."}
    rt.rt.stop()
    assert "Cannot initialize the action more than once." in rt.stderr()
    assert SENTINEL not in rt.stdout() + rt.stderr()


def test_bad_init_json_is_400_and_a_later_init_still_works(serve):
    rt = serve(memory="fork")
    resp = rt.client.post("/init", b"{not json")
    assert resp.status == 400
    assert resp.json()["error"].startswith("Error unmarshaling request")
    assert rt.init("hello").status == 200
    assert rt.run({"name": "A"}).json() == {"greeting": "Hello A!"}


@pytest.mark.parametrize("body", [{}, {"value": {}}, {"value": {"code": ""}}])
def test_init_without_code_is_403(serve, body):
    rt = serve(memory="fork")
    resp = rt.client.post("/init", body)
    assert (resp.status, resp.json()) == (403, {"error": "Missing main/no code to execute."})


def test_binary_init_with_invalid_base64_is_400(serve):
    rt = serve(memory="fork")
    resp = rt.client.post("/init", {"value": {"code": "!!!not base64", "binary": True}})
    assert resp.status == 400
    assert resp.json()["error"].startswith("cannot decode the request")


@pytest.mark.parametrize(
    ("action", "logged"),
    [
        ("syntax_error", "indent"),
        ("imports_missing", "No module named 'no_such_module_anywhere'"),
        ("exits_at_import", "Command exited abruptly during initialization."),
    ],
)
def test_broken_actions_fail_init_with_502_and_the_reason_in_the_log(serve, action, logged):
    rt = serve(memory="fork")
    resp = rt.init(action)
    assert resp.status == 502
    assert resp.json()["error"] in (
        "Cannot start action. Check logs for details.",
        "The action failed to generate or locate a binary. See logs for details.",
    )
    assert logged in rt.stderr() + rt.stdout()


def test_missing_entry_point_fails_init(serve):
    rt = serve(memory="fork")
    resp = rt.init("hello", main="nosuchmain")
    assert resp.status == 502
    assert "no function named 'nosuchmain'" in rt.stderr()


def test_run_before_init_is_500(serve):
    rt = serve(memory="fork")
    resp = rt.run({})
    assert (resp.status, resp.json()) == (500, {"error": "no action defined yet"})


@pytest.mark.parametrize("memory", BACKENDS)
def test_invalid_run_json_gets_a_clear_400_and_the_next_run_works(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("hello").status == 200
    resp = rt.client.post("/run", b'{"value": {"name": ')
    assert resp.status == 400
    assert "Invalid JSON" in resp.json()["error"]
    assert rt.run({"name": "B"}).json() == {"greeting": "Hello B!"}


@pytest.mark.parametrize("memory", BACKENDS)
def test_non_dict_result_is_502_and_the_next_run_works(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("returns_non_dict").status == 200
    resp = rt.run({})
    assert resp.status == 502
    assert resp.json() == {"error": "The action did not return a dictionary or array."}
    assert rt.run({}).status == 502


def test_array_results_and_array_inputs_are_supported(serve):
    rt = serve(memory="fork")
    assert rt.init("returns_list").status == 200
    resp = rt.run([1, 2])
    assert (resp.status, resp.json()) == (200, [[1, 2], {"n": 1}])


@pytest.mark.parametrize("memory", BACKENDS)
def test_unencodable_result_is_an_application_error(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("bad_result").status == 200
    for kind in ("object", "nan"):
        resp = rt.run({"kind": kind})
        assert resp.status == 200
        assert "cannot be encoded as JSON" in resp.json()["error"]


@pytest.mark.parametrize("memory", BACKENDS)
def test_exception_is_an_application_error_with_a_user_traceback(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("raises").status == 200
    resp = rt.run({})
    assert (resp.status, resp.json()) == (200, {"error": "nope"})
    err = rt.stderr()
    assert "Traceback" in err and "in helper" in err
    assert "rewind/launcher" not in err and "rewind/memory" not in err


@pytest.mark.parametrize("memory", BACKENDS)
def test_an_exiting_action_gets_400_command_exited_and_the_next_run_works(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("crashes").status == 200
    resp = rt.run({"how": "sys.exit"})
    assert (resp.status, resp.json()) == (400, {"error": "command exited"})
    resp = rt.run({"how": "none"})
    assert (resp.status, resp.json()) == (200, {"ok": True})


def test_unicode_in_source_arguments_logs_and_result(serve):
    rt = serve(memory="fork")
    assert rt.init("prints_unicode").status == 200
    resp = rt.run({"delimiter": "❄"})
    assert resp.json() == {"winter": "❄ ❄ ❄"}
    assert "❄ ✓ ünïcödé" in rt.stdout()


def test_a_one_mebibyte_argument_is_echoed(serve):
    rt = serve(memory="fork")
    assert rt.init("echo").status == 200
    big = "x" * (1 << 20)
    resp = rt.run({"big": big})
    assert resp.status == 200
    assert resp.json()["args"]["big"] == big


def test_bodies_over_the_limit_get_413(serve):
    rt = serve(memory="fork", env={"REWIND_MAX_BODY": "4096"})
    assert rt.init("echo").status == 200
    resp = rt.run({"big": "x" * 10000})
    assert resp.status == 413
    assert "exceeds the limit of 4096 bytes" in resp.json()["error"]
    assert rt.run({"small": 1}).status == 200


def test_unknown_paths_are_404_and_wrong_methods_405(serve):
    import http.client

    rt = serve(memory="fork")
    assert rt.client.post("/nope", {}).status == 404
    conn = http.client.HTTPConnection("127.0.0.1", rt.client.port, timeout=10)
    conn.request("GET", "/run")
    assert conn.getresponse().status == 405
    conn.close()


@pytest.mark.parametrize("memory", BACKENDS)
def test_overlapping_runs_are_queued_and_all_answered(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("echo").status == 200
    results: dict[int, tuple[int, object]] = {}

    def call(i: int) -> None:
        resp = rt.run({"i": i})
        results[i] = (resp.status, resp.json()["args"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (200, {"i": i}) for i in range(12)}


def test_pretty_printed_run_bodies_work(serve):
    rt = serve(memory="fork")
    assert rt.init("echo").status == 200
    body = json.dumps({"value": {"a": [1, 2]}}, indent=2).encode()
    resp = rt.client.post("/run", body)
    assert resp.status == 200 and resp.json()["args"] == {"a": [1, 2]}
