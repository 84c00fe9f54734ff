"""``rewind invoke --docker IMAGE ACTION``: run an action in containers (user's shell).

Creates a container of IMAGE the way the OpenWhisk invoker does, initialises ACTION (a
``.py`` file or a ``.zip``), runs it ``--repeat`` times in the same warm container and
prints one JSON line per activation: status, result, logs, container, duration. Exits
0 when every activation succeeded (200 with a JSON object or array), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from rewind.cliargs import add_env_option, parse_param
from rewind_tools.invoker.emulator import (
    DEFAULT_DOCKER,
    ActionSpec,
    Activation,
    Invoker,
    InvokerError,
)

# Runtime settings forwarded to the container as REWIND_* environment variables.
_RUNTIME_OPTIONS = {
    "memory": "REWIND_MEMORY",
    "files": "REWIND_FILES",
    "checkpoint": "REWIND_CHECKPOINT",
    "warmup": "REWIND_WARMUP",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rewind invoke --docker``."""
    p = argparse.ArgumentParser(prog="rewind invoke", description=__doc__)
    p.add_argument("action", help="a .py file or a .zip with __main__.py")
    p.add_argument("--docker", metavar="IMAGE", required=True, help="the runtime image")
    p.add_argument("--main", default="main", help="the entry-point function (default main)")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        type=parse_param,
        default=[],
        metavar="K=V",
        help="a parameter (V parsed as JSON when it parses)",
    )
    add_env_option(p, "an init env variable of the action")
    p.add_argument("--repeat", "-n", type=int, default=1, help="activations to run")
    p.add_argument("--timeout", type=float, default=60.0, help="time limit in seconds")
    p.add_argument("--memory-mb", type=int, default=256, help="container memory limit")
    p.add_argument("--network", default="bridge", help="docker network (default bridge)")
    p.add_argument(
        "--docker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra docker run argument (repeatable), e.g. --security-opt=...",
    )
    p.add_argument("--docker-binary", default=DEFAULT_DOCKER, help="the docker CLI")
    p.add_argument("--memory", help="REWIND_MEMORY of the container")
    p.add_argument("--files", help="REWIND_FILES of the container")
    p.add_argument("--checkpoint", help="REWIND_CHECKPOINT of the container")
    p.add_argument("--warmup", help="REWIND_WARMUP of the container")
    return p


def _report(activation: Activation) -> str:
    return json.dumps(
        {
            "status": activation.status,
            "result": activation.result,
            "stdout": activation.stdout,
            "stderr": activation.stderr,
            "container": activation.container,
            "cold": activation.cold,
            "duration_ms": round(activation.duration_ms, 1),
        },
        ensure_ascii=False,
    )


def run_cli(args: list[str]) -> int:
    """Run ``rewind invoke --docker`` with ``args`` (the words after ``invoke``)."""
    opts = build_parser().parse_args(args)
    try:
        action = ActionSpec.from_path(opts.action, main=opts.main)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"rewind invoke: cannot read {opts.action}: {exc}", file=sys.stderr)
        return 2
    action = ActionSpec(
        code=action.code,
        main=action.main,
        binary=action.binary,
        name=action.name,
        env=dict(opts.env),
    )
    env = {
        var: getattr(opts, attr)
        for attr, var in _RUNTIME_OPTIONS.items()
        if getattr(opts, attr) is not None
    }
    invoker = Invoker(
        opts.docker,
        opts.memory_mb,
        network=opts.network,
        env=env,
        extra_args=opts.docker_arg,
        docker=opts.docker_binary,
    )
    status = 0
    try:
        for _ in range(max(opts.repeat, 1)):
            activation = invoker.invoke(action, dict(opts.param), opts.timeout)
            print(_report(activation), flush=True)
            if not activation.ok:
                status = 1
    except InvokerError as exc:
        print(f"rewind invoke: {exc}", file=sys.stderr)
        return 1
    finally:
        invoker.close()
    return status
