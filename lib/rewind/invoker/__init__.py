"""An OpenWhisk invoker emulator for the runtime image (tests, CLI, benchmarks).

Creates action containers the way OpenWhisk's invoker does and runs activations in
them; see :mod:`rewind.invoker.emulator`. ``rewind invoke --docker IMAGE ACTION`` is its
command line (:func:`run_cli`).
"""

from rewind.invoker.cli import run_cli
from rewind.invoker.emulator import (
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
