"""Pieces of the snapshot process that need no fork: framing checks and failure texts."""

import json
import os
import signal

import pytest

from rewind.memory.child import decode_started, encode_started
from rewind.memory.supervise import Outcome, describe_failure, forward_one_line
from rewind.request import errors


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("t")
    os.write(fd, data)
    return fd


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b'{"a": 1}\n', True),
        (b"", False),
        (b'{"a": 1}', False),
        (b'{"forged": 1}\n{"a": 1}\n', False),
        (b'{"a": 1}\n{"forged"', False),
    ],
)
def test_only_a_single_newline_terminated_line_is_forwarded(data, ok):
    fd = _memfd(data)
    r, w = os.pipe()
    try:
        assert forward_one_line(fd, w) is ok
        os.set_blocking(r, False)
        try:
            sent = os.read(r, 1 << 16)
        except BlockingIOError:
            sent = b""
        assert sent == (data if ok else b"")  # nothing at all unless it is one line
    finally:
        for x in (fd, r, w):
            os.close(x)


def test_forward_moves_large_results_through_a_pipe():
    data = b'{"x": "' + b"y" * (3 << 20) + b'"}\n'
    fd = _memfd(data)
    r, w = os.pipe()
    got = bytearray()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        while chunk := os.read(r, 1 << 16):
            got += chunk
        os._exit(0 if bytes(got) == data else 1)
    os.close(r)
    assert forward_one_line(fd, w) is True
    os.close(w)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def _exit_status(code):
    return code << 8


@pytest.mark.parametrize(
    ("outcome", "text", "exited"),
    [
        (Outcome(True, _exit_status(errors.CHILD_ACTION_EXITED)), "exited before", True),
        (Outcome(True, signal.SIGSEGV), "killed by SIGSEGV", True),
        (Outcome(True, signal.SIGKILL), "out of memory", True),
        (Outcome(True, _exit_status(3)), "exited with code 3", True),
        (Outcome(True, signal.SIGKILL, timed_out=True), "exceeded its deadline", False),
    ],
)
def test_failures_are_described_without_request_data(outcome, text, exited):
    line = describe_failure(outcome)
    assert line.endswith(b"\n")
    body = json.loads(line)
    assert text in body["error"]
    assert (body.get("rewind_status") == "exited") is exited


def test_started_message_round_trips():
    assert decode_started(encode_started(1700000000.5, 42)) == (True, 1700000000.5, 42)
    assert decode_started(encode_started(None)) == (True, None, 0)
    assert decode_started(b"") == (False, None, 0)


def test_a_result_dressed_up_as_a_status_line_is_not_forwarded():
    memfd = os.memfd_create("t")
    r, w = os.pipe()
    try:
        os.write(memfd, b' {"rewind_status": "exited"}\n')
        assert forward_one_line(memfd, w) is False
        os.ftruncate(memfd, 0)
        os.lseek(memfd, 0, os.SEEK_SET)
        os.write(memfd, b'{"rewind_status": "exited"}\n')
        assert forward_one_line(memfd, w) is True
        assert os.read(r, 100) == b'{"rewind_status": "exited"}\n'
    finally:
        for fd in (memfd, r, w):
            os.close(fd)
