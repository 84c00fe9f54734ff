"""Hostile requests against the image as the invoker runs it (Docker's default seccomp
profile, 256 MiB): each costs at most its own request, never the container."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewind_tools.invoker import ActionSpec, Container, Invoker

pytestmark = pytest.mark.container

ACTIONS = Path(__file__).resolve().parents[1] / "actions"


class Warm:
    """One action warm in one container; requests go straight to it."""

    def __init__(self, invoker: Invoker, name: str) -> None:
        self.invoker = invoker
        self.spec = ActionSpec(code=(ACTIONS / name / "main.py").read_text(), name=name)
        first = invoker.invoke(self.spec, {}, 60)
        assert first.ok, first
        self.container: Container = next(c for c in invoker.containers if c.name == first.container)

    def post_raw(self, body: bytes, wait_s: float = 60) -> tuple[int, Any]:
        reply = self.container.post("/run", body, wait_s)
        self.container.collect_logs(5.0)
        return reply.status, reply.json()

    def run(self, params: Any) -> tuple[int, Any]:
        return self.post_raw(json.dumps(self.invoker.run_body(self.spec, params, 30)).encode())


@pytest.fixture
def warm(runtime_image: str) -> Iterator[Any]:
    invokers: list[Invoker] = []

    def _warm(name: str, env: dict[str, str] | None = None) -> Warm:
        inv = Invoker(runtime_image, memory_mb=256, env=env or {})
        invokers.append(inv)
        return Warm(inv, name)

    yield _warm
    for inv in invokers:
        inv.close()


def test_a_body_nested_5000_deep_is_answered_and_the_container_serves_on(warm):
    w = warm("echo")
    body = b'{"value": {"x": ' + b"[" * 5000 + b"]" * 5000 + b'}, "deadline": "9e15"}'
    status, reply = w.post_raw(body)
    assert status in (200, 400) and "error" in reply, (status, reply)
    status, reply = w.run({"after": 1})
    assert status == 200 and reply["args"] == {"after": 1}


def test_a_body_that_exhausts_memory_while_parsed_costs_only_its_request(warm):
    """48 MB of empty arrays need far more than 256 MiB once decoded: the request process
    dies (out of memory) after taking the request, before it parsed its deadline."""
    w = warm("echo")
    items = b",".join([b"[]"] * (16 * 1024 * 1024))
    body = b'{"value": {"x": [' + items + b']}, "deadline": "9e15"}'
    status, reply = w.post_raw(body, wait_s=120)
    assert status in (200, 400) and "error" in reply, (status, reply)
    status, reply = w.run({"after": 2})
    assert status == 200 and reply["args"] == {"after": 2}


def test_code_planted_for_the_launcher_restart_never_runs(warm):
    w = warm("plants_launcher")
    assert w.run({}) == (200, {"count": 1})
    # In the image the snapshot process runs under its own user, so the kill fails (200
    # with the action's error); with one identity it dies (400) and the proxy restarts it.
    status, _ = w.run({"plant": True})
    assert status in (200, 400)
    assert [w.run({})[1]["count"] for _ in range(3)] == [1, 1, 1]


def test_a_full_size_limited_tmp_is_rewound(runtime_image: str):
    """Item 5 of the hostile-input issue: on `--tmpfs /tmp:size=64m` a request grows a
    checkpointed 24 MiB file until /tmp is full; the rewind must still restore it."""
    inv = Invoker(runtime_image, memory_mb=256, extra_args=["--tmpfs", "/tmp:size=64m"])
    try:
        w = Warm(inv, "fills_tmp")
        status, reply = w.run({"fill": True})
        assert status == 200 and reply["filled"] > 60 * 1024 * 1024, reply
        for _ in range(2):
            assert w.run({}) == (200, {"size": 24 * 1024 * 1024, "clean": True})
    finally:
        inv.close()


def test_request_processes_are_the_oom_killers_first_choice_in_the_image(warm):
    """As the function user, whose /proc files a non-dumpable process cannot write."""
    w = warm("reports_oom_score")
    status, reply = w.run({})
    assert status == 200 and reply["own"] == 1000 and reply["parent"] < 1000, reply


SITECUSTOMIZE = """
import os, sys
with open("/tmp/ran-as", "a") as fh:
    fh.write(f"{os.path.basename(sys.argv[0] or 'python')} {os.getuid()} {os.geteuid()}\\n")
"""

READS_RAN_AS = """
def main(args):
    with open("/tmp/ran-as") as fh:
        return {"lines": fh.read().splitlines()}
"""


def test_action_code_never_runs_as_root_at_init(runtime_image: str):
    """A sitecustomize.py in the action zip, reached through /init's PYTHONPATH, runs in
    every Python process of /init that honours it: none of them may be root."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("__main__.py", READS_RAN_AS)
        zf.writestr("sitecustomize.py", SITECUSTOMIZE)
    # The first /init of a container materialises the action in /action/1.
    env = {"PYTHONPATH": "/action/1/src:/action/1/bin"}
    spec = ActionSpec(code=buf.getvalue(), binary=True, name="sitecustomize", env=env)
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        activation = inv.invoke(spec, {}, 60)
        assert activation.ok, activation
        lines = activation.result["lines"]
        assert any(line.startswith("compile ") for line in lines), lines  # it did run
        assert all("0" not in line.split()[1:] for line in lines), lines
    finally:
        inv.close()


def test_an_actions_env_cannot_switch_isolation_off_in_the_image(runtime_image: str):
    code = (ACTIONS / "leaks_global_state" / "main.py").read_text()
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        bad = ActionSpec(code=code, name="weak", env={"REWIND_MEMORY": "none"})
        activation = inv.invoke(bad, {}, 60)
        assert not activation.ok and "REWIND_MEMORY=none" in json.dumps(activation.result)
        good = ActionSpec(code=code, name="strong", env={"REWIND_MEMORY": "fork"})
        assert inv.invoke(good, {}, 60).ok
    finally:
        inv.close()


def test_replacing_the_runtimes_code_at_import_fails_init_in_the_image(runtime_image: str):
    code = (ACTIONS / "patches_runtime" / "main.py").read_text()
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        activation = inv.invoke(ActionSpec(code=code, name="patches"), {}, 60)
        assert not activation.ok, activation
        assert "replaced the runtime's own" in (activation.stdout + activation.stderr), activation
    finally:
        inv.close()


def test_results_that_look_like_status_or_have_lone_surrogates_are_the_actions(warm):
    w = warm("returns_status_lookalike")
    for _ in range(2):
        assert w.run({}) == (200, {"rewind_status": "exited", "error": "not really", "ok": True})
    w = warm("returns_surrogate")
    status, reply = w.run({})
    assert status == 200 and reply == {"text": "a\ud800b", "ok": "é"}


def test_a_sentinel_printed_by_the_action_leaves_later_logs_in_place(runtime_image: str):
    code = (ACTIONS / "prints_sentinel" / "main.py").read_text()
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        spec = ActionSpec(code=code, name="sentinel")
        for _ in range(3):
            activation = inv.invoke(spec, {}, 60)
            assert activation.ok, activation
            text = activation.stdout + activation.stderr
            assert text.count("XXX-THE-END-OF-A-WHISK-ACTIVATION-XXX") == 3, text
    finally:
        inv.close()


def test_an_init_env_no_process_could_start_with_does_not_break_later_inits_in_the_image(
    runtime_image: str,
):
    code = (ACTIONS / "echo" / "main.py").read_text()
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        container = inv.create("env")
        bad = container.init({"code": code, "main": "main", "env": {"A\x00B": "x"}}, 60)
        assert bad.status == 400, bad.body
        good = container.init({"code": code, "main": "main", "env": {"FINE": "1"}}, 60)
        assert good.status == 200, good.body
    finally:
        inv.close()
