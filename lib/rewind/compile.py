"""The compile step OpenWhisk runs at /init: ``compile <main> <src> <bin>`` (proxy child).

Turns the materialised action in ``src`` into a runnable ``bin``: the action module
becomes ``main__``, ``bin/exec`` starts the launcher with this interpreter, and the
source is checked for a syntax error. Any output means failure to the proxy, so this
prints only problems.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

ACTION_MODULE_FILE = "main__.py"

EXEC_TEMPLATE = """#!/bin/bash
# Written by the rewind compile step: starts the launcher for this action.
export PYTHONIOENCODING=UTF-8
cd "$(dirname "$0")" || exit 1
if [ -n "$__OW_EXECUTION_ENV" ] && [ -f exec.env ] \\
   && [ "$__OW_EXECUTION_ENV" != "$(cat exec.env)" ]; then
  echo "Execution environment version mismatch. See logs for details."
  echo "Expected: $(cat exec.env)"
  echo "Actual: $__OW_EXECUTION_ENV"
  exit 1
fi
exec {python} -P -m rewind.launcher --main {main}
"""


class CompileError(Exception):
    """The action cannot be prepared; the message is shown to the action's author."""


def place_module(src: str) -> None:
    """Rename the action's file(s) so the entry module is ``main__.py``."""
    exec_file = os.path.join(src, "exec")
    dunder_main = os.path.join(src, "__main__.py")
    if os.path.isfile(exec_file) and not os.path.exists(dunder_main):
        os.rename(exec_file, dunder_main)
    if os.path.isfile(dunder_main):
        os.rename(dunder_main, os.path.join(src, ACTION_MODULE_FILE))


def build_virtualenv(src: str) -> None:
    """Build ``virtualenv/`` from requirements.txt when the zip brings none."""
    reqs = os.path.join(src, "requirements.txt")
    venv = os.path.join(src, "virtualenv")
    if not os.path.isfile(reqs) or os.path.exists(venv):
        return
    steps = [
        [sys.executable, "-m", "virtualenv", venv],
        [os.path.join(venv, "bin", "pip"), "install", "-q", "-r", reqs],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CompileError(f"cannot install requirements.txt: {proc.stdout}{proc.stderr}")


def check_action(src: str) -> None:
    """Report what would stop the launcher from importing the action."""
    venv = os.path.join(src, "virtualenv")
    if os.path.isdir(venv) and not any(
        os.path.isfile(os.path.join(venv, sub, "activate_this.py")) for sub in ("bin", "Scripts")
    ):
        raise CompileError("Invalid virtualenv. Zip file does not include 'activate_this.py'.")
    module = os.path.join(src, ACTION_MODULE_FILE)
    if not os.path.isfile(module):
        raise CompileError("Zip file does not include main__.py (nor __main__.py)")
    with open(module, "rb") as fh:
        source = fh.read()
    try:
        ast.parse(source, filename="__main__.py")
    except SyntaxError as exc:
        raise CompileError(f"{exc.msg} ({exc.filename}, line {exc.lineno})") from None


def write_exec(bin_dir: str, main: str) -> None:
    """Write ``bin/exec`` (and ``exec.env`` when an execution env is required)."""
    script = EXEC_TEMPLATE.format(python=shlex.quote(sys.executable), main=shlex.quote(main))
    path = os.path.join(bin_dir, "exec")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(script)
    os.chmod(path, 0o755)
    env = os.environ.get("__OW_EXECUTION_ENV", "")
    if env:
        with open(os.path.join(bin_dir, "exec.env"), "w", encoding="utf-8") as fh:
            fh.write(env)


def compile_action(main: str, src: str, bin_dir: str) -> None:
    """Prepare ``src`` into ``bin_dir``; raise CompileError with a user-facing message."""
    if not main.isidentifier():
        raise CompileError(f"the entry point {main!r} is not a valid Python function name")
    place_module(src)
    build_virtualenv(src)
    check_action(src)
    if os.path.exists(bin_dir):
        shutil.rmtree(bin_dir)
    os.rename(src, bin_dir)
    write_exec(bin_dir, main)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``rewind-compile`` and the image's /bin/compile)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: compile <main> <src-dir> <bin-dir>")
        return 2
    try:
        compile_action(*args)
    except CompileError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
