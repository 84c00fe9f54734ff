"""The launcher's start-up: config, action import, checkpoint policy, backend (launcher).

Order matters: the action is imported once, the optional warm-up runs, then the
memory and file checkpoints are taken before the ack (policy ``init``/``warmup``) or
after the first request (policy ``first-request``), and the backend serves the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence

from rewind.debug import debug_enabled
from rewind.launcher import integrity, status
from rewind.launcher.action import flush_logs, load_action, print_user_traceback
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
from rewind.memory import identity

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


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run the launcher; return its exit code (see launcher.errors)."""
    global _debug
    _debug = debug_enabled(environ)
    args = parse_args(argv)
    spawn_env = dict(environ)  # what a fresh request process starts with
    spawn_env.pop(identity.ENV, None)  # it starts as the function user already
    try:
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
        if args.one_shot:
            with _quiet_stdio():  # printed once already, in /init's log
                main = load_action(os.getcwd(), args.main)
        else:
            main = load_action(os.getcwd(), args.main)
    except LauncherError as exc:
        init_error(str(exc))
        return EXIT_LOAD_ERROR
    reader = LineReader(0)
    if args.one_shot:
        from rewind.memory.child import serve_one

        memfd, status_fd = args.one_shot
        serve_one(reader, main, memfd, status_fd, close_fds=[])

    from rewind.memory.base import ServeContext, serve_one_in_process
    from rewind.memory.select import choose

    pipe = status.StatusPipe.open(cfg.status_fd)
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
        status_fd=pipe.fd,
    )
    if cfg.checkpoint == "warmup":
        try:
            main(cfg.warmup)
        except Exception as exc:
            print_user_traceback(exc)
            init_error(f"the warm-up run (REWIND_WARMUP) failed: {exc}")
            return EXIT_LOAD_ERROR
    # What the action printed at import (or in the warm-up) belongs to /init's log: flushed
    # now, it is not in the buffer every request process inherits from the snapshot.
    flush_logs()
    try:
        integrity.verify(marks)
    except LauncherError as exc:
        init_error(str(exc))
        return EXIT_LOAD_ERROR
    backend = None
    note = None
    if cfg.checkpoint != "first-request":
        try:
            backend, note = choose(cfg)
            if files is not None:
                files.start()
        except (ConfigError, FailClosed) as exc:
            init_error(str(exc))
            return EXIT_LOAD_ERROR
    record = status.choice(cfg, backend, note)
    log(status.describe(record))
    if cfg.wait_for_ack:
        send_ack(RESULT_FD, record)
    else:
        pipe.send(rewind=record)
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
            record = status.choice(cfg, backend, note)
            log(status.describe(record))
            pipe.send(rewind=record)
        ctx.checkpoint_descriptors()
        return backend.serve(ctx)  # type: ignore[attr-defined, no-any-return]
    except FailClosed as exc:
        log(f"refusing further requests: {exc}")
        pipe.send(failed_closed=str(exc))
        return EXIT_FAIL_CLOSED
