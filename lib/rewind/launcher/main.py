"""The launcher's start-up: config, action import, checkpoint policy, backend (launcher).

Order matters: the action is imported once, the optional warm-up runs, then the
memory and file checkpoints are taken before the ack (policy ``init``/``warmup``) or
after the first request (policy ``first-request``), and the backend serves the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from rewind.launcher.action import load_action, print_user_traceback
from rewind.launcher.config import LauncherConfig
from rewind.launcher.errors import (
    EXIT_FAIL_CLOSED,
    EXIT_LOAD_ERROR,
    EXIT_OK,
    ConfigError,
    FailClosed,
    LauncherError,
)
from rewind.launcher.protocol import RESULT_FD, LineReader, send_ack


def log(msg: str) -> None:
    """Launcher diagnostics go to stderr, which the invoker keeps with the logs."""
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


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run the launcher; return its exit code (see launcher.errors)."""
    args = parse_args(argv)
    spawn_env = dict(environ)  # what a fresh request process starts with
    try:
        cfg = LauncherConfig.from_env(environ)
        if cfg.memory in ("auto", "fork"):
            for key, val in SINGLE_THREAD_DEFAULTS.items():
                os.environ.setdefault(key, val)
        main = load_action(os.getcwd(), args.main)
    except LauncherError as exc:
        log(str(exc))
        return EXIT_LOAD_ERROR
    reader = LineReader(0)
    if args.one_shot:
        from rewind.memory.child import serve_one

        memfd, status_fd = args.one_shot
        serve_one(reader, main, memfd, status_fd, close_fds=[])

    from rewind.memory.base import ServeContext, serve_one_in_process
    from rewind.memory.select import choose

    files = None
    if cfg.files != "off":
        from rewind.launcher.files import FileRewinder

        files = FileRewinder(cfg.sidecar)
    ctx = ServeContext(
        main=main,
        main_name=args.main,
        reader=reader,
        files=files,
        result_fd=RESULT_FD,
        debug=cfg.debug,
        spawn_env=spawn_env,
        log=log,
        metrics_fd=_open_metrics(cfg.metrics_file),
    )
    if cfg.checkpoint == "warmup":
        try:
            main(cfg.warmup)
        except Exception as exc:
            print_user_traceback(exc)
            log(f"the warm-up run (REWIND_WARMUP) failed: {exc}")
            return EXIT_LOAD_ERROR
    backend = None
    if cfg.checkpoint != "first-request":
        try:
            backend, note = choose(cfg)
            if files is not None:
                files.start()
        except (ConfigError, FailClosed) as exc:
            log(str(exc))
            return EXIT_LOAD_ERROR
        if note:
            log(note)
    if cfg.wait_for_ack:
        send_ack(RESULT_FD)
    try:
        if backend is None:
            # first-request: the first real request runs here and its state is the snapshot.
            if not serve_one_in_process(ctx, catch_exit=False):
                return EXIT_OK
            try:
                backend, note = choose(cfg)
            except ConfigError as exc:
                raise FailClosed(str(exc)) from None
            if files is not None:
                files.start()
            if note:
                log(note)
        ctx.checkpoint_descriptors()
        return backend.serve(ctx)  # type: ignore[attr-defined, no-any-return]
    except FailClosed as exc:
        log(f"refusing further requests: {exc}")
        return EXIT_FAIL_CLOSED
