"""The launcher's start-up: config, action import, checkpoint policy, backend (launcher).

Order matters: the action is imported once, then the checkpoint policy
(``launcher.checkpoint``) warms up and takes the memory and file checkpoints before the
ack (``init``/``warmup``) or after the first request (``first-request``), and the chosen
backend serves the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence

from rewind.debug import debug_enabled
from rewind.launcher import integrity, status
from rewind.launcher.checkpoint import Checkpoint
from rewind.launcher.config import LauncherConfig
from rewind.launcher.files import FileRewinder
from rewind.memory import identity
from rewind.memory.base import ServeContext
from rewind.memory.child import serve_one
from rewind.request.action import ActionMain, flush_logs, load_action
from rewind.request.errors import (
    EXIT_FAIL_CLOSED,
    EXIT_LOAD_ERROR,
    EXIT_OK,
    FailClosed,
    LauncherError,
)
from rewind.request.protocol import RESULT_FD, LineReader

_debug = False  # REWIND_DEBUG / OW_DEBUG, set once by run()


def log(msg: str) -> None:
    """A diagnostic, on stderr under REWIND_DEBUG/OW_DEBUG only: the invoker attributes
    every line on the container's streams to some user's activation."""
    if _debug:
        print(f"rewind: {msg}", file=sys.stderr, flush=True)


def init_error(msg: str) -> None:
    """Why /init failed, always on stderr: the details upstream also logs for a failed
    init (with OW_LOG_INIT_ERROR, the proxy ends them with the sentinels)."""
    print(f"rewind: {msg}", file=sys.stderr, flush=True)


# Native libraries that start worker threads at import unless told not to; fork would
# lose those threads in every request process. An action's own env overrides these.
SINGLE_THREAD_DEFAULTS = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


def _open_metrics(path: str) -> int | None:
    if not path:
        return None
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[None]:
    """Send what an import prints to /dev/null: a fresh request process re-imports the
    action, whose import-time output belongs to /init's log only."""
    flush_logs()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        flush_logs()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Arguments written into bin/exec by the compile step."""
    parser = argparse.ArgumentParser(prog="rewind.launcher")
    parser.add_argument("--main", default="main", help="name of the action's entry point")
    parser.add_argument(
        "--one-shot",
        nargs=2,
        type=int,
        metavar=("MEMFD", "STATUSFD"),
        help="internal: serve one request into MEMFD (the fresh backend)",
    )
    return parser.parse_args(argv)


def _load(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[LauncherConfig, ActionMain, integrity.Marks]:
    """Read the settings, take the snapshot identity, import the action.

    Raises LauncherError: /init fails.
    """
    cfg = LauncherConfig.from_env(environ)
    if not args.one_shot:
        ident = identity.Identity.from_env(environ)
        if ident is not None:
            identity.enter(ident)  # before any of the action's code runs
        elif cfg.debug:
            log("the snapshot process shares the function's identity (no snapshot user)")
    if cfg.memory in ("auto", "fork"):
        for key, val in SINGLE_THREAD_DEFAULTS.items():
            os.environ.setdefault(key, val)
    marks = integrity.fingerprint()
    # A fresh request process printed its import's output once already, in /init's log.
    with _quiet_stdio() if args.one_shot else contextlib.nullcontext():
        main = load_action(os.getcwd(), args.main)
    return cfg, main, marks


def _context(
    cfg: LauncherConfig,
    main_name: str,
    main: ActionMain,
    reader: LineReader,
    spawn_env: dict[str, str],
    files: FileRewinder | None,
    pipe: status.StatusPipe,
) -> ServeContext:
    """What every backend serves with."""
    return ServeContext(
        main=main,
        main_name=main_name,
        reader=reader,
        files=files,
        result_fd=RESULT_FD,
        debug=cfg.debug,
        spawn_env=spawn_env,
        log=log,
        metrics_fd=_open_metrics(cfg.metrics_file),
        status_fd=pipe.fd,
    )


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run the launcher; return its exit code (see request.errors)."""
    global _debug
    _debug = debug_enabled(environ)
    args = parse_args(argv)
    spawn_env = dict(environ)  # what a fresh request process starts with
    spawn_env.pop(identity.ENV, None)  # it starts as the function user already
    try:
        cfg, main, marks = _load(args, environ)
    except LauncherError as exc:
        init_error(str(exc))
        return EXIT_LOAD_ERROR
    reader = LineReader(0)
    if args.one_shot:
        memfd, status_fd = args.one_shot
        serve_one(reader, main, memfd, status_fd, close_fds=[])
    pipe = status.StatusPipe.open(cfg.status_fd)
    files = FileRewinder(cfg.sidecar) if cfg.files != "off" else None
    ctx = _context(cfg, args.main, main, reader, spawn_env, files, pipe)
    policy = Checkpoint(cfg, ctx, files, pipe, log)
    try:
        policy.before_ack(marks)
    except LauncherError as exc:
        init_error(str(exc))
        return EXIT_LOAD_ERROR
    policy.acknowledge()
    try:
        backend = policy.backend_after_ack()
        if backend is None:
            return EXIT_OK
        ctx.checkpoint_descriptors()
        return backend.serve(ctx)
    except FailClosed as exc:
        log(f"refusing further requests: {exc}")
        pipe.send(failed_closed=str(exc))
        return EXIT_FAIL_CLOSED
