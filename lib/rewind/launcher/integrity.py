"""The runtime's own code, checked after the action's import (launcher process).

The action is imported into the process that becomes the snapshot process, so its
import-time code could replace the runtime's functions (the backend choice, the fork of
request processes, the rewind) and switch isolation off for every caller. Before the
import, every module of the runtime that serves requests is loaded and the identity of
each of its functions, classes and their code is recorded; after the import (and the
warm-up) they must all be the same objects, or /init fails. Patching the interpreter
itself (ctypes, ``gc`` tricks, builtins such as ``os.fork``) is outside what this sees:
docs/SECURITY.md says what the action's author is trusted with.
"""

from __future__ import annotations

import importlib
import sys
import types

from rewind.request.errors import ActionLoadError

# Everything the snapshot process runs after the import; loaded before it, so that the
# action cannot plant its own version of a module the runtime would import later.
SERVING_MODULES = (
    "rewind.launcher.backend",
    "rewind.launcher.checkpoint",
    "rewind.launcher.files",
    "rewind.launcher.status",
    "rewind.memory.base",
    "rewind.memory.child",
    "rewind.memory.fork",
    "rewind.memory.inplace",
    "rewind.memory.kernel",
    "rewind.memory.supervise",
    "rewind.memory.sysapi",
    "rewind.request.action",
    "rewind.request.protocol",
    "rewind.sidecar.client",
    "rewind.sidecar.protocol",
)

Marks = dict[str, int]


def _is_code(value: object) -> bool:
    return isinstance(
        value,
        types.FunctionType
        | types.BuiltinFunctionType
        | type
        | staticmethod
        | classmethod
        | property,
    )


def _mark(marks: Marks, key: str, value: object) -> None:
    marks[key] = id(value)
    code = getattr(value, "__code__", None)
    if code is not None:
        marks[key + ".__code__"] = id(code)
        marks[key + ".__defaults__"] = id(getattr(value, "__defaults__", None))


def fingerprint() -> Marks:
    """Load the serving modules and record the identity of their code."""
    for name in SERVING_MODULES:
        importlib.import_module(name)
    marks: Marks = {}
    for name, module in list(sys.modules.items()):
        if name != "rewind" and not name.startswith("rewind."):
            continue
        for attr, value in list(vars(module).items()):
            if not _is_code(value):
                continue
            _mark(marks, f"{name}.{attr}", value)
            if isinstance(value, type) and value.__module__ == name:
                for member, inner in list(vars(value).items()):
                    if _is_code(inner):
                        _mark(marks, f"{name}.{attr}.{member}", inner)
    return marks


def verify(before: Marks) -> None:
    """Raise ActionLoadError naming the first runtime object the action replaced."""
    after = fingerprint()
    for key, ident in before.items():
        if after.get(key) != ident:
            what = key.removesuffix(".__code__").removesuffix(".__defaults__")
            raise ActionLoadError(
                f"the action replaced the runtime's own {what} while it was imported; "
                "the runtime refuses to serve it (its isolation would not hold)"
            )
