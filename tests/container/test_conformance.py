"""OpenWhisk's BasicActionRunnerTests against the image (openwhisk-contract.md §10, §6).

Every runtime must pass them. Each test drives one container of the image over HTTP on
127.0.0.1, as the upstream harness does (``ActionContainer.checkStreams``): it counts the
sentinels on each stream exactly, then requires the streams, sentinels removed, to hold
nothing but the action's own prints — the runtime prints nothing of its own. Each runs
under Docker's default seccomp profile (``auto`` picks fork) and under the shipped
core/python3Action/seccomp-userfaultfd.json (``auto`` picks inplace).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import SENTINEL, ActionSpec, Invoker
from rewind_tools.invoker.emulator import Container, HttpReply

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "tests" / "actions"
PROFILE = ROOT / "core" / "python3Action" / "seccomp-userfaultfd.json"
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
API_HOST = "https://api.conformance.example"
# What REWIND_MEMORY=auto picks under each profile on a stock kernel.
EXPECTED_BACKEND = {"default": "fork", "shipped": "inplace"}


@pytest.fixture(params=["default", "shipped"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def box(runtime_image: str, profile: str) -> Iterator[Box]:
    """One fresh container of the image with the image's defaults."""
    extra = ["--security-opt", f"seccomp={PROFILE}"] if profile == "shipped" else []
    inv = Invoker(runtime_image, memory_mb=256, api_host=API_HOST, extra_args=extra)
    try:
        yield Box(inv.create("conformance"))
    finally:
        inv.close()


class Box:
    """A container driven like the upstream harness: /init, /run, then its whole logs."""

    def __init__(self, container: Container) -> None:
        self.c = container

    def init_raw(self, body: Any) -> HttpReply:
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.c.post("/init", body, 60)
            except (ConnectionError, http.client.RemoteDisconnected):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def init(self, action: str, main: str = "main", env: dict[str, str] | None = None) -> HttpReply:
        code = (ACTIONS / action / "main.py").read_text()
        value = {"name": action, "main": main, "binary": False, "code": code, "env": env}
        return self.init_raw({"value": value})

    def run(self, value: Any, **context: str) -> HttpReply:
        return self.c.post("/run", {"value": value, **context}, 60)

    def get(self, path: str) -> HttpReply:
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return HttpReply(resp.status, resp.read())
        finally:
            conn.close()

    def streams(self, sentinels: int) -> tuple[list[str], list[str]]:
        """The whole stdout and stderr with exactly ``sentinels`` sentinels on each,
        as lines without them. Docker's log driver lags a little behind the replies."""
        limit = time.monotonic() + (10 if sentinels else 1)
        while True:
            out, err = self.c.logs()
            counts = (out.count(SENTINEL + "\n"), err.count(SENTINEL + "\n"))
            if counts == (sentinels, sentinels) or time.monotonic() > limit:
                break
            time.sleep(0.05)
        assert counts == (sentinels, sentinels), (out, err)
        strip = lambda text: [x for x in text.splitlines() if x != SENTINEL]  # noqa: E731
        return strip(out), strip(err)


def test_init_without_code_is_refused(box: Box) -> None:
    reply = box.init_raw({"value": {"name": "x", "main": "main", "binary": False, "code": ""}})
    assert reply.status != 200
    assert box.streams(0) == ([], [])


def test_init_with_an_empty_object_is_refused_with_one_of_the_two_messages(box: Box) -> None:
    reply = box.init_raw({})
    assert reply.status != 200
    assert reply.json() in (
        {"error": "Missing main/no code to execute."},
        {"error": "The action failed to generate or locate a binary. See logs for details."},
    )
    assert box.streams(0) == ([], [])


def test_a_non_object_result_is_refused_with_empty_streams(box: Box) -> None:
    assert box.init("returns_non_dict").status == 200
    reply = box.run({})
    assert reply.status != 200
    assert reply.json() == {"error": "The action did not return a dictionary or array."}
    assert box.streams(1) == ([], [])


def test_a_second_init_is_refused_logged_and_without_sentinels(box: Box) -> None:
    assert box.init("hello").status == 200
    reply = box.init("hello")
    assert reply.status != 200
    assert reply.json() == {"error": "Cannot initialize the action more than once."}
    out, err = box.streams(0)
    assert out == []
    assert len(err) == 1 and err[0].endswith("Cannot initialize the action more than once.")


def test_a_non_default_entry_point(box: Box) -> None:
    assert box.init("ow_entry_point", main="niam").status == 200
    reply = box.run({})
    assert (reply.status, reply.json()) == (200, {"result": "it works"})
    assert box.streams(1) == ([], [])


def test_echo_of_four_argument_sets_logs_only_the_actions_prints(box: Box) -> None:
    assert box.init("ow_echo").status == 200
    argss: list[Any] = [{}, {"a": "A"}, {"i": 1, "f": 1.5, "b": True}, {"nested": {"l": [1, None]}}]
    for args in argss:
        reply = box.run(args)
        assert (reply.status, reply.json()) == (200, args)
    assert box.streams(4) == (["hello stdout"] * 4, ["hello stderr"] * 4)


def test_unicode_in_source_arguments_logs_and_result(box: Box) -> None:
    assert box.init("prints_unicode").status == 200
    reply = box.run({"delimiter": "❄"})
    assert (reply.status, reply.json()) == (200, {"winter": "❄ ❄ ❄"})
    assert box.streams(1) == (["❄ ✓ ünïcödé"], [])


def test_init_env_is_visible_at_import(box: Box) -> None:
    env = {"SOME_VAR": "xyz", "ANOTHER_VAR": ""}
    assert box.init("ow_env_at_import", env=env).status == 200
    reply = box.run({})
    assert (reply.status, reply.json()) == (200, env)
    assert box.streams(1) == ([], [])


def test_activation_context_and_the_containers_api_host(box: Box) -> None:
    assert box.init("ow_context").status == 200
    ctx = {
        "api_key": "uuid:key",
        "namespace": "ns",
        "action_name": "/ns/pkg/ctx",
        "action_version": "0.0.3",
        "activation_id": "0123456789abcdef",
    }
    deadline = str(int((time.time() + 60) * 1000))
    reply = box.run({}, deadline=deadline, **ctx)
    assert reply.status == 200
    assert reply.json() == {"api_host": API_HOST, "deadline": deadline, **ctx}
    assert box.streams(1) == ([], [])


def test_a_large_input_is_echoed(box: Box) -> None:
    assert box.init("ow_echo").status == 200
    args = {"arg": "a" * (1 << 20)}
    reply = box.run(args)
    assert (reply.status, reply.json()) == (200, args)
    assert box.streams(1) == (["hello stdout"], ["hello stderr"])


def test_a_deadline_already_past_is_not_enforced(box: Box) -> None:
    assert box.init("ow_echo").status == 200
    reply = box.run({"x": 1}, deadline="123")
    assert (reply.status, reply.json()) == (200, {"x": 1})
    assert box.streams(1) == (["hello stdout"], ["hello stderr"])


def test_what_the_action_prints_at_import_appears_once(box: Box) -> None:
    assert box.init("prints_at_import").status == 200
    for _ in range(3):
        assert box.run({}).json() == {"ok": True}
    out, err = box.streams(3)
    assert sorted(out) == sorted(
        ["printed at import on stdout", "written at import to stdout.buffer"]
        + ["printed by the request"] * 3
    )
    assert err == ["printed at import on stderr"]


def test_status_names_the_backend_and_never_changes_with_requests(box: Box, profile: str) -> None:
    assert box.init("leaks_global_state").status == 200
    before = box.get("/rewind/status")
    assert before.status == 200
    status = before.json()
    assert status["memory"] == EXPECTED_BACKEND[profile], status
    assert (status["checkpoint"], status["initialized"], status["failed_closed"]) == (
        "init",
        True,
        False,
    )
    if profile == "default":
        assert "userfaultfd" in status["reason"], status  # why auto fell back to fork
    for value in ({"secret": "x" * 5000}, {}, {"secret": "y"}):
        box.run(value)
        box.c.post("/run", {"value": {}, "deadline": "NaN"}, 60)
        assert box.get("/rewind/status").body == before.body
    assert box.c.post("/rewind/status", {}, 30).status == 405
    out, err = box.streams(6)
    assert (out, err) == ([], [])


def test_the_invoker_emulator_sees_clean_activation_logs(runtime_image: str, profile: str) -> None:
    extra = ["--security-opt", f"seccomp={PROFILE}"] if profile == "shipped" else []
    with Invoker(runtime_image, memory_mb=256, extra_args=extra) as inv:
        action = ActionSpec.from_path(ACTIONS / "hello" / "main.py")
        for name in ("a", "b"):
            act = inv.invoke(action, {"name": name}, timeout_s=30)
            assert act.status == 200 and act.logs_complete, act
            assert (act.stdout, act.stderr) == (f"hello {name}\n", "")


def test_status_body_is_json_with_fixed_keys(box: Box) -> None:
    assert box.init("hello").status == 200
    body = box.get("/rewind/status").body
    assert list(json.loads(body)) == [
        "proxy",
        "initialized",
        "reported",
        "memory",
        "reason",
        "checkpoint",
        "files",
        "failed_closed",
        "fail_reason",
    ]


def test_with_rewind_debug_the_runtime_logs_its_choice(runtime_image: str, profile: str) -> None:
    # The streams checks above can fail: with debugging on, the runtime's own lines
    # (here the backend choice, also in the status endpoint) land in the logs.
    extra = ["--security-opt", f"seccomp={PROFILE}"] if profile == "shipped" else []
    with Invoker(runtime_image, memory_mb=256, env={"REWIND_DEBUG": "1"}, extra_args=extra) as inv:
        box = Box(inv.create("debug"))
        assert box.init("hello").status == 200
        assert box.run({"name": "d"}).status == 200
        out, err = box.streams(1)
        assert out == ["hello d"]
        assert f"rewind: memory backend {EXPECTED_BACKEND[profile]} (" in "\n".join(err)


def test_a_runtime_that_fails_closed_says_why_in_the_status_not_the_logs(box: Box) -> None:
    # The image's local sidecar dies (killed from outside, as root): the file rewind
    # after the next reply fails, the runtime refuses every later request, and the
    # reason goes to GET /rewind/status and nowhere a later activation's log could see.
    assert box.init("mutates_files").status == 200
    assert box.run({"op": "mutate"}).status == 200
    find = (
        "import os\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    cmd = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')\n"
        "    if b'sidecar' in cmd and b'--listen' in cmd:\n"
        "        os.kill(int(p), 9); print(p)\n"
    )
    killed = subprocess.run(
        [DOCKER, "exec", box.c.id, "python3", "-c", find], capture_output=True, text=True
    )
    assert killed.returncode == 0 and killed.stdout.strip(), killed
    statuses = [box.run({}).status for _ in range(3)]
    assert statuses in ([503, 503, 503], [200, 503, 503]), statuses
    status = box.get("/rewind/status").json()
    assert status["failed_closed"] and "sidecar" in status["fail_reason"], status
    time.sleep(1)  # the refusals write sentinels or not, depending on timing
    out, err = box.c.logs()
    lines = [x for x in (out + err).splitlines() if x != SENTINEL]
    assert lines == [], "the runtime's own words reached the activation logs"
