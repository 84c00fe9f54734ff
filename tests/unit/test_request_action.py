"""The per-request path: parsing, context export, result encoding, tracebacks."""

import json
import os
import time

import pytest

from rewind.request import action
from rewind.request.protocol import LineReader


def _result(line: bytes):
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


def test_context_keys_become_ow_variables_and_value_is_the_payload(monkeypatch):
    monkeypatch.delenv("__OW_API_KEY", raising=False)
    seen = {}

    def main(args):
        seen["args"] = args
        return {"key": os.environ["__OW_API_KEY"], "ns": os.environ["__OW_NAMESPACE"]}

    req = {"value": {"a": 1}, "api_key": "k:1", "namespace": "guest"}
    out = _result(action.run_request(main, json.dumps(req).encode()))
    assert out == {"key": "k:1", "ns": "guest"}
    assert seen["args"] == {"a": 1}
    monkeypatch.delenv("__OW_API_KEY")
    monkeypatch.delenv("__OW_NAMESPACE")


def test_numeric_deadline_is_exported_as_text(monkeypatch):
    env: dict[str, str] = {}
    assert action.export_context({"deadline": 17, "value": {}}, env) is None
    assert env == {"__OW_DEADLINE": "17"}


def test_non_scalar_context_value_is_a_clear_error_not_a_crash():
    out = _result(action.run_request(lambda a: {}, b'{"value": {}, "namespace": {"x": 1}}'))
    assert "context key 'namespace' must be a string" in out["error"]


@pytest.mark.parametrize("line", [b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_malformed_requests_get_an_error_result(line):
    out = _result(action.run_request(lambda a: {"ran": True}, line))
    assert "error" in out and "ran" not in out


def test_an_exception_becomes_an_error_with_a_traceback_without_launcher_frames(capfd):
    def main(args):
        raise ValueError("boom")

    out = _result(action.run_request(main, b'{"value": {}}'))
    assert out == {"error": "boom"}
    err = capfd.readouterr().err
    assert "Traceback" in err and "ValueError: boom" in err
    assert "rewind/launcher" not in err


def test_unencodable_and_nan_results_become_errors():
    out = _result(action.run_request(lambda a: {"o": object()}, b'{"value": {}}'))
    assert "cannot be encoded as JSON" in out["error"]
    out = _result(action.run_request(lambda a: {"x": float("nan")}, b'{"value": {}}'))
    assert "cannot be encoded" in out["error"]


def test_system_exit_is_left_to_the_backend():
    def main(args):
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        action.run_request(main, b'{"value": {}}')


def test_unicode_results_are_kept_as_utf8():
    line = action.run_request(lambda a: {"s": "☃ ❄"}, b'{"value": {}}')
    assert "☃ ❄".encode() in line


def test_deadline_of_reads_epoch_ms():
    now = 1699999999.0
    assert action.deadline_of(b'{"deadline": "1700000000000"}', now) == 1700000000.0
    assert action.deadline_of(b'{"deadline": 1700000000000}', now) == 1700000000.0
    assert action.deadline_of(b'{"value": {}}', now) is None
    assert action.deadline_of(b'{"deadline": "soon"}', now) is None


def test_a_deadline_already_past_on_arrival_is_not_enforced():
    # OpenWhisk's conformance test sends "deadline": "123" and expects a normal reply.
    assert action.deadline_of(b'{"deadline": "123"}') is None
    assert action.deadline_of(b'{"deadline": "1700000000000"}', 1700000000.5) is None
    future = int((time.time() + 60) * 1000)
    assert action.deadline_of(json.dumps({"deadline": str(future)}).encode()) == future / 1000


@pytest.mark.parametrize(
    "raw",
    [
        '"NaN"',
        '"nan"',
        '"-Infinity"',
        '"Infinity"',
        "NaN",
        "-Infinity",
        '"abc"',
        '""',
        '"1e400"',
        "1e400",
        str(10**400),
        '"99999999999999999999999999"',
        "true",
        "null",
        "[1]",
        '{"ms": 1}',
        "[" * 5000 + "]" * 5000,
    ],
)
def test_a_deadline_that_cannot_be_parsed_is_absent_and_never_raises(raw):
    line = b'{"value": {}, "deadline": ' + raw.encode() + b"}"
    assert action.deadline_of(line, 1700000000.0) is None


def test_a_request_nested_too_deep_to_parse_is_an_error_result_not_a_crash():
    line = b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    out = _result(action.run_request(lambda a: {"ran": True}, line))
    assert "nested too deeply" in out["error"]


def test_line_reader_frames_exactly_and_keeps_pipelined_bytes():
    r, w = os.pipe()
    os.write(w, b'{"a": 1}\n{"b"')
    reader = LineReader(r)
    assert reader.read_line() == b'{"a": 1}'
    assert reader.has_pending
    os.write(w, b": 2}\n")
    os.close(w)
    assert reader.read_line() == b'{"b": 2}'
    assert reader.read_line() is None
    os.close(r)


def test_load_action_reports_a_missing_entry_point(tmp_path):
    (tmp_path / "main__.py").write_text("def other(a):\n    return {}\n")
    with pytest.raises(action.ActionLoadError, match="no function named 'main'"):
        action.load_action(str(tmp_path), "main")


def test_invalid_virtualenv_is_reported(tmp_path):
    (tmp_path / "virtualenv" / "bin").mkdir(parents=True)
    with pytest.raises(action.ActionLoadError, match="activate_this.py"):
        action.activate_virtualenv(str(tmp_path))
