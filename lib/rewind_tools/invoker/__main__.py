"""``python -m rewind_tools.invoker``: the invoker emulator's command line (user's shell).

Same arguments as ``rewind invoke --docker IMAGE ACTION`` (see :mod:`rewind_tools.invoker.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rewind_tools.invoker.cli import run_cli

__all__ = ["main", "run_cli"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator CLI with ``argv`` (default: the process arguments)."""
    return run_cli(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
