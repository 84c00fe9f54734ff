"""``KEY=VALUE`` arguments shared by ``rewind invoke`` and its ``--docker`` form (user's shell).

They live apart from :mod:`rewind.cli` so the invoker emulator's command line in
``rewind_tools`` can use them without importing the command that dispatches to it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: v as JSON when it parses, else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def parse_env(text: str) -> tuple[str, str]:
    """``K=V`` of ``--env``: V is kept as text, as /init's env values are strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, raw


def add_env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--env/-e K=V`` (repeatable), collected as a list of pairs."""
    parser.add_argument(
        "--env", "-e", action="append", type=parse_env, default=[], metavar="K=V", help=help_text
    )
