"""An OpenWhisk invoker emulator for the runtime image (tests, CLI, benchmarks).

Creates action containers the way OpenWhisk's invoker does and runs activations in
them; see :mod:`rewind_tools.invoker.emulator`. ``rewind invoke --docker IMAGE ACTION`` is its
command line (:func:`run_cli`).
"""

from rewind_tools.invoker.cli import run_cli
from rewind_tools.invoker.emulator import (
    SENTINEL,
    ActionSpec,
    Activation,
    Container,
    HttpReply,
    Invoker,
    InvokerError,
)

__all__ = [
    "SENTINEL",
    "ActionSpec",
    "Activation",
    "Container",
    "HttpReply",
    "Invoker",
    "InvokerError",
    "run_cli",
]
