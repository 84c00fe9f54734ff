"""The `rewind` command as a user runs it: invoke prints results, serve runs until SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rewind.runtime import ActionClient, free_port

ROOT = Path(__file__).resolve().parents[2]
REWIND = [sys.executable, "-m", "rewind.cli"]


def test_invoke_prints_the_actions_json_result():
    proc = subprocess.run(
        [*REWIND, "invoke", str(ROOT / "examples" / "hello.py"), "--param", "name=Ann"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"greeting": "Hello Ann!"}
    assert "greeting Ann" in proc.stderr  # the action's log line, sentinels filtered
    assert "XXX_THE_END" not in proc.stderr


def test_invoke_repeats_and_isolates_each_request():
    proc = subprocess.run(
        [
            *REWIND,
            "invoke",
            str(ROOT / "examples" / "leaky.py"),
            "--repeat",
            "3",
            "--param",
            "caller=ann",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["callers_in_memory"] for r in results] == [["ann"]] * 3
    assert [r["previous_env"] for r in results] == [None] * 3


def test_invoke_reports_a_missing_file_clearly():
    proc = subprocess.run(
        [*REWIND, "invoke", "/nonexistent/action.py"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "cannot read /nonexistent/action.py" in proc.stderr


def test_serve_runs_in_the_foreground_quietly_until_sigterm(tmp_path):
    port = free_port()
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*REWIND, "serve", "--port", str(port)], stdout=o, stderr=e)
    try:
        client = ActionClient(port=port)
        client.wait_ready(20, proc)
        assert client.init((ROOT / "examples" / "hello.py").read_text()).status == 200
        assert client.run({"name": "B"}).json() == {"greeting": "Hello B!"}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0
    logs = out.read_text() + err.read_text()
    lines = [x for x in logs.splitlines() if "XXX_THE_END" not in x]
    assert lines == ["greeting B"]
    assert "greeting B" in out.read_text()  # the action's stdout stays on stdout
    with pytest.raises(ConnectionRefusedError):  # and the runtime stopped with the command
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(
    ("argv", "missing", "hint"),
    [
        (["bench", "--quick"], "matplotlib", "pip install -r bench/requirements.txt"),
        (["invoke", "--docker", "img", "a.py"], "rewind_tools", "make dev"),
    ],
)
def test_a_tool_without_its_modules_says_in_one_line_how_to_install_them(argv, missing, hint):
    # None in sys.modules makes importing that module fail as if it were not installed.
    code = (
        f"import sys; sys.modules[{missing!r}] = None; from rewind.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert f"needs the module '{missing}" in line and hint in line
