"""rewind_tools.invoker without Docker: the invoker's docker run flags, the /init and /run
bodies, log attribution up to the sentinels, and the CLI's argument handling."""

from __future__ import annotations

import base64

import pytest

from rewind_tools.invoker import SENTINEL, ActionSpec, Container, Invoker
from rewind_tools.invoker.cli import build_parser

pytestmark = pytest.mark.unit


def _flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_run_args_mirror_the_invokers_docker_run_flags() -> None:
    inv = Invoker("img", 256, extra_args=["--security-opt", "no-new-privileges"])

    args = inv.run_args("c1")

    assert args[:2] == ["run", "-d"]
    assert _flag_values(args, "--memory") == ["256m"]
    assert _flag_values(args, "--memory-swap") == ["256m"]
    assert _flag_values(args, "--cpu-shares") == ["128"]
    assert _flag_values(args, "--network") == ["bridge"]
    assert "__OW_API_HOST=https://localhost" in _flag_values(args, "-e")
    assert _flag_values(args, "--name") == ["c1"]
    assert _flag_values(args, "--cap-drop") == ["NET_RAW", "NET_ADMIN"]
    assert args[-3:] == ["--security-opt", "no-new-privileges", "img"]


def test_container_port_is_published_on_loopback_only() -> None:
    assert _flag_values(Invoker("img").run_args("c"), "-p") == ["127.0.0.1::8080"]


def test_bytes_code_is_sent_base64_as_a_binary_action() -> None:
    value = ActionSpec(code=b"PK\x03\x04zip", main="niam", env={"A": "1"}).init_value()

    assert value["binary"] is True
    assert base64.b64decode(value["code"]) == b"PK\x03\x04zip"
    assert (value["main"], value["env"]) == ("niam", {"A": "1"})


def test_run_body_carries_the_activation_context_as_strings() -> None:
    body = Invoker("img").run_body(ActionSpec(code="x", name="a"), {"k": 1}, 5.0)

    assert body["value"] == {"k": 1}
    assert body["action_name"] == "/guest/a"
    assert all(isinstance(v, str) for k, v in body.items() if k != "value")
    assert body["deadline"].isdigit()
    assert "api_key" in body


def test_no_api_key_when_the_action_does_not_want_one() -> None:
    body = Invoker("img").run_body(ActionSpec(code="x", provide_api_key=False), {}, 5.0)

    assert "api_key" not in body


def test_pool_key_changes_with_code_main_and_env() -> None:
    base = ActionSpec(code="x")
    keys = {
        base.key(),
        ActionSpec(code="y").key(),
        ActionSpec(code="x", main="m").key(),
        ActionSpec(code="x", env={"A": "1"}).key(),
    }
    assert len(keys) == 4
    assert ActionSpec(code="x").key() == base.key()


class _FakeLogs(Container):
    def __init__(self, streams: list[tuple[str, str]]) -> None:
        super().__init__("docker", "c", "id", 1)
        self.streams = streams

    def logs(self) -> tuple[str, str]:
        return self.streams[0] if len(self.streams) == 1 else self.streams.pop(0)


def test_each_activation_gets_the_logs_between_its_sentinels() -> None:
    s = SENTINEL + "\n"
    fake = _FakeLogs([(f"one\n{s}two\n{s}", f"e1\n{s}{s}")])

    assert fake.collect_logs(0) == ("one\n", "e1\n", True)
    assert fake.collect_logs(0) == ("two\n", "", True)


def test_missing_sentinel_returns_what_is_there_and_says_incomplete() -> None:
    fake = _FakeLogs([("partial\n", f"e\n{SENTINEL}\n")])

    assert fake.collect_logs(0) == ("partial\n", "e\n", False)


def test_collect_logs_waits_for_the_second_sentinel() -> None:
    s = SENTINEL + "\n"
    fake = _FakeLogs([(f"out\n{s}", "err\n"), (f"out\n{s}", f"err\n{s}")])

    assert fake.collect_logs(5) == ("out\n", "err\n", True)


def test_cli_parses_params_as_json_when_they_parse() -> None:
    opts = build_parser().parse_args(["a.py", "--docker", "img", "-p", "n=3", "-p", "s=x"])

    assert dict(opts.param) == {"n": 3, "s": "x"}
