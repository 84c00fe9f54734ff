"""What the launcher tells the proxy: the ack's report, the status pipe, the debug flag."""

import json
import os
import tempfile

import pytest

from rewind.debug import debug_enabled, flag_on
from rewind.launcher import status
from rewind.launcher.config import LauncherConfig
from rewind.request.protocol import send_ack


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "FALSE", " 0 ", "No", None])
def test_debug_values_that_mean_off(value):
    # The same table as debugOn in proxy/actionloop/config.go.
    assert not flag_on(value)
    assert not debug_enabled({} if value is None else {"REWIND_DEBUG": value, "OW_DEBUG": value})


@pytest.mark.parametrize("value", ["1", "yes", "true", "on", "/tmp/action.log"])
def test_debug_values_that_mean_on(value):
    assert flag_on(value)
    assert debug_enabled({"OW_DEBUG": value})
    assert LauncherConfig.from_env({"REWIND_DEBUG": value}).debug


def test_rewind_debug_zero_no_longer_turns_debugging_on():
    assert not LauncherConfig.from_env({"REWIND_DEBUG": "0"}).debug
    assert LauncherConfig.from_env({"REWIND_DEBUG": "0", "OW_DEBUG": "1"}).debug


class Named:
    name = "fork"


def test_choice_records_say_which_backend_and_why():
    cfg = LauncherConfig(memory="auto", checkpoint="init", files="local")
    assert status.choice(cfg, Named(), "REWIND_MEMORY=auto: using fork: inplace x") == {
        "memory": "fork",
        "reason": "REWIND_MEMORY=auto: using fork: inplace x",
        "checkpoint": "init",
        "files": "local",
    }
    assert status.choice(cfg, Named(), None)["reason"] == "REWIND_MEMORY=auto: fork works here"
    explicit = LauncherConfig(memory="fork")
    assert status.choice(explicit, Named(), None)["reason"] == "REWIND_MEMORY=fork"
    pending = status.choice(LauncherConfig(checkpoint="first-request"), None, None)
    assert pending["memory"] == "" and "first request" in pending["reason"]


def test_the_ack_carries_the_report_and_upstream_reads_only_ok():
    r, w = os.pipe()
    send_ack(w, {"memory": "fork"})
    send_ack(w)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        with_report, plain = fh.readline(), fh.readline()
    assert json.loads(with_report) == {"ok": True, "rewind": {"memory": "fork"}}
    assert plain == b'{"ok": true}\n'


def test_the_status_pipe_is_used_only_when_it_is_a_pipe():
    assert status.StatusPipe.open(None).fd is None
    with tempfile.TemporaryFile() as fh:
        assert status.StatusPipe.open(fh.fileno()).fd is None  # a file, not our pipe
    assert status.StatusPipe.open(987).fd is None  # not open
    r, w = os.pipe()
    os.set_inheritable(w, True)
    pipe = status.StatusPipe.open(w)
    assert pipe.fd == w and not os.get_inheritable(w)  # kept out of exec'd processes
    pipe.send(failed_closed="why ✓")
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        assert json.loads(fh.read()) == {"failed_closed": "why ✓"}
    pipe.send(failed_closed="the proxy went away")  # EBADF/EPIPE: ignored


@pytest.mark.parametrize("raw", ["", "x", "3", "2", "-5", "04"])
def test_status_fd_setting(raw):
    fd = LauncherConfig.from_env({"REWIND_STATUS_FD": raw}).status_fd
    assert fd == (4 if raw == "04" else None)
