"""One request in its own process (a forked standby child or a fresh interpreter).

The process reads exactly one request, tells the snapshot process it started (and
its deadline, the only request-derived value the snapshot process ever sees), runs the
action, writes the result line to a private memfd, and ends with ``os._exit``.
"""

from __future__ import annotations

import os
import random
import resource
import select
import signal
import sys
import traceback
from array import array
from typing import NoReturn

from rewind.memory import identity, keyrings, prefault, sysapi
from rewind.request import errors
from rewind.request.action import (
    ActionMain,
    deadline_in,
    encode_result,
    export_context,
    flush_logs,
    parse_request,
    run_parsed,
)
from rewind.request.protocol import LineReader, write_all

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


# Status markers of a request process, before its "started" record: READING once a request
# is there to read (from then on, dying can leave part of it in stdin), TOOK once the whole
# line is read and before anything parses it (from then on, dying costs exactly that
# request an error reply).
READING = b"r"
TOOK = b"T"


def wait_for_request(fd: int) -> None:
    """Block until ``fd`` is readable (a request, or EOF)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not poller.poll():
        pass


def encode_started(deadline: float | None, faults: int = 0) -> bytes:
    """The "started" message: deadline (epoch s, or -) and page faults taken so far."""
    dl = repr(deadline).encode() if deadline is not None else b"-"
    return b"S" + dl + b" " + str(faults).encode() + b"\n"


def decode_started(msg: bytes) -> tuple[bool, float | None, int]:
    """(started, deadline in epoch seconds, faults before the request) from a message."""
    if not msg.startswith(b"S"):
        return False, None, 0
    fields = msg[1:].split(b"\n", 1)[0].split(b" ")
    try:
        deadline = float(fields[0]) if fields[0] != b"-" else None
    except ValueError:
        deadline = None
    faults = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    return True, deadline, faults


def harden(close_fds: list[int]) -> None:
    """Make this request process unable to reach what it must not hold."""
    # First: a uid change clears the parent-death signal and resets dumpable.
    identity.become_function()
    sysapi.die_with_parent(signal.SIGKILL)
    sysapi.prefer_for_oom_kill()
    sysapi.set_dumpable(False)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    random.seed()  # fork already reseeds the module's instance; be explicit.


def prewarm() -> None:
    """Run the runtime's own request path once on a dummy request.

    Python writes reference counts on every object it touches, so the first request
    in a forked child takes a copy-on-write fault per page it touches; doing it here,
    before the request arrives, takes those faults off the request's critical path.
    """
    scratch: dict[str, str] = {}
    request, _ = parse_request(b'{"value": {"k": [1, "v"]}, "deadline": "0", "x": "y"}')
    if request is not None:
        export_context(request, scratch)
    encode_result({"k": [1, "v", 1.5, None, True]})
    encode_started(deadline_in(request))


def serve_one(
    reader: LineReader,
    main: ActionMain,
    memfd: int,
    status_fd: int,
    close_fds: list[int],
    prefault_pages: array | None = None,
    learn_fd: int | None = None,
) -> NoReturn:
    """Run one request and exit; never returns (request process).

    ``prefault_pages`` are written before the request arrives; with ``learn_fd`` the
    pages this process wrote are listed there once its result is written.
    """
    code = errors.CHILD_INTERNAL_ERROR
    try:
        code = _serve(reader, main, memfd, status_fd, close_fds, prefault_pages, learn_fd)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
    finally:
        flush_logs()
        os._exit(code)


def _serve(
    reader: LineReader,
    main: ActionMain,
    memfd: int,
    status_fd: int,
    close_fds: list[int],
    prefault_pages: array | None,
    learn_fd: int | None,
) -> int:
    """The body of ``serve_one``; returns the request process's exit code."""
    harden(close_fds)
    keyrings.start_clean()  # after harden: the request's final uid owns @u
    prewarm()
    if prefault_pages:
        prefault.touch(prefault_pages)
    wait_for_request(reader.fd)
    os.write(status_fd, READING)
    line = reader.read_line()
    if line is None:
        return errors.CHILD_STDIN_EOF
    os.write(status_fd, TOOK)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    parsed = parse_request(line)  # once, for the deadline and for the action
    del line
    write_all(status_fd, encode_started(deadline_in(parsed[0]), faults))
    os.close(status_fd)
    # The action gets no handle on the request stream: the next request is not ours.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        out = run_parsed(main, parsed)
    except (SystemExit, KeyboardInterrupt):
        return errors.CHILD_ACTION_EXITED
    del parsed
    write_all(memfd, out)
    if learn_fd is not None:
        try:
            prefault.save(learn_fd, prefault.written_pages())
        except OSError:
            pass  # learning only speeds up later requests; this result stands
    return errors.CHILD_RESULT_WRITTEN
