"""The ``rewind`` command: serve, invoke, sidecar, bench (user's shell).

``rewind serve`` runs the runtime locally in the foreground; ``rewind invoke`` is the
first thing a new user runs: it starts a runtime, initialises an action, runs it and
prints each result as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from rewind import settings
from rewind.cliargs import add_env_option, parse_param
from rewind.runtime import SENTINEL, LocalRuntime, RuntimeError_, ServeOptions, free_port

MEMORY_CHOICES = settings.MEMORY.choices
#: ``docker`` needs a host sidecar that ``rewind serve`` does not run.
FILES_CHOICES = tuple(c for c in settings.FILES.choices if c != "docker")


def _add_runtime_options(p: argparse.ArgumentParser, env_help: str) -> None:
    add_env_option(p, env_help)
    for opt, setting, choices in (
        ("--memory", settings.MEMORY, MEMORY_CHOICES),
        ("--files", settings.FILES, FILES_CHOICES),
        ("--checkpoint", settings.CHECKPOINT, settings.CHECKPOINT.choices),
    ):
        p.add_argument(opt, choices=choices, help=f"{setting.name} (default {setting.default})")
    p.add_argument("--warmup", help=f"{settings.WARMUP.name}: JSON payload for the warm-up run")


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog="rewind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the runtime locally (foreground)")
    serve.add_argument("--port", type=int, default=8080)
    _add_runtime_options(
        serve,
        "a default /init env variable of every action (repeatable); an /init's own env "
        "wins. The action sees only /init's env, __OW_* variables, PATH, HOME and REWIND_*",
    )

    inv = sub.add_parser("invoke", help="init and run an action, print each result")
    inv.add_argument("action", help="a .py file or a .zip")
    inv.add_argument("--main", default="main")
    inv.add_argument("--param", "-p", action="append", type=parse_param, default=[])
    inv.add_argument("--repeat", "-n", type=int, default=1)
    inv.add_argument("--docker", metavar="IMAGE", help="run in a container of IMAGE")
    _add_runtime_options(inv, "an /init env variable of the action (repeatable)")

    side = sub.add_parser("sidecar", help="the file snapshot sidecar", add_help=False)
    side.add_argument("args", nargs=argparse.REMAINDER)
    bench = sub.add_parser("bench", help="the benchmark suite", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _options(args: argparse.Namespace, port: int, init_env: bool = False) -> ServeOptions:
    return ServeOptions(
        port=port,
        memory=args.memory,
        files=args.files,
        checkpoint=args.checkpoint,
        warmup=args.warmup,
        init_env=dict(args.env) if init_env else {},
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the proxy in the foreground until SIGTERM or SIGINT."""
    try:
        rt = LocalRuntime(_options(args, args.port, init_env=True))
    except RuntimeError_ as exc:
        print(f"rewind serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.is_set() and rt.proc.poll() is None:
        stop.wait(0.2)
    code = rt.stop()
    return 0 if stop.is_set() else code


def _copy_logs(src: IO[bytes], dst: IO[str]) -> None:
    for raw in src:
        line = raw.decode("utf-8", "replace")
        if line.strip() != SENTINEL:
            dst.write(line)
            dst.flush()


def cmd_invoke(args: argparse.Namespace) -> int:
    """Start a runtime, init the action, run it ``--repeat`` times, print results."""
    path = args.action
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        print(f"rewind invoke: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    code: str | bytes = raw if raw.startswith(b"PK") else raw.decode("utf-8")
    params = dict(args.param)
    try:
        rt = LocalRuntime(
            _options(args, free_port()), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except RuntimeError_ as exc:
        print(f"rewind invoke: {exc}", file=sys.stderr)
        return 2
    pumps = [
        threading.Thread(target=_copy_logs, args=(stream, sys.stderr), daemon=True)
        for stream in (rt.proc.stdout, rt.proc.stderr)
        if stream is not None
    ]
    for t in pumps:
        t.start()
    status = 0
    try:
        rt.wait_ready()
        init = rt.client.init(code, main=args.main, env=dict(args.env) or None)
        if init.status != 200:
            print(
                f"rewind invoke: /init failed ({init.status}): {init.body.decode()}",
                file=sys.stderr,
            )
            return 1
        for _ in range(args.repeat):
            resp = rt.client.run(params)
            print(resp.body.decode().rstrip("\n"), flush=True)
            if resp.status != 200:
                status = 1
    except (RuntimeError_, OSError) as exc:
        print(f"rewind invoke: {exc}", file=sys.stderr)
        return 1
    finally:
        rt.stop()
        for t in pumps:
            t.join(timeout=2)
    return status


# What to install when a development tool or one of its optional dependencies is missing.
_TOOLS_HINT = "it ships with the development install: make dev (pip install -e '.[dev]')"
_BENCH_HINT = "install the benchmark's dependencies: pip install -r bench/requirements.txt"


def _run_tool(command: str, module: str, argv: list[str], hint: str = _TOOLS_HINT) -> int:
    """Run ``module``'s ``main``, or say in one line what to install (exit 2).

    The tools live in ``rewind_tools``, which the runtime image leaves out; they are
    imported only when their command runs, so the runtime never depends on them.
    """
    try:
        tool = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        name = exc.name or module
        why = _TOOLS_HINT if name.split(".")[0] == "rewind_tools" else hint
        print(f"rewind {command}: needs the module {name!r}; {why}", file=sys.stderr)
        return 2
    return int(tool.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rewind`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sidecar":
        from rewind.sidecar.__main__ import main as sidecar_main

        return sidecar_main(argv[1:])
    if argv and argv[0] == "bench":
        return _run_tool("bench", "rewind_tools.bench.__main__", argv[1:], _BENCH_HINT)
    args = build_parser().parse_args(argv)
    if args.command == "invoke" and args.docker:
        return _run_tool("invoke --docker", "rewind_tools.invoker.__main__", argv[1:])
    if args.command == "serve":
        return cmd_serve(args)
    return cmd_invoke(args)


if __name__ == "__main__":
    sys.exit(main())
