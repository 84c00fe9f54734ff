"""The layering inside lib/rewind, read from the code: no cycle and no arrow pointing up.

The import graph is built with ``ast`` from every module (imports inside functions
count too) and printed at package level; run with ``-s`` to see it. A package may import
only from its own modules or from a lower layer. The size limits of STYLE.md are checked
here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

LIB = Path(__file__).resolve().parents[2] / "lib" / "rewind"

# Highest first. Packages in one layer may not import each other, except the tools.
LAYERS: list[set[str]] = [
    {"cli", "cliargs", "runtime"},  # the `rewind` command and `rewind serve` (tools: rewind_tools)
    {"launcher", "compile"},  # the entry point, checkpoint policy, backend choice; bin/exec
    {"memory", "sidecar"},  # the memory backends; the file sidecar
    {"files", "request"},  # file snapshots; the request protocol
    {"debug"},  # the debug switch
    {"settings"},  # the settings catalogue
]
TOOLS = LAYERS[0]

# Found in the code while issue 13 is in progress, each owned by another part of it. The
# tests below fail once one is gone, so that it is taken off this list.
PENDING_CYCLE: set[str] = set()
PENDING_LONG_FILES: set[str] = set()
PENDING_LONG_FUNCTIONS: set[str] = set()

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def layer_of(package: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if package in layer:
            return depth
    raise AssertionError(f"rewind.{package} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    """rewind.* module name -> its file."""
    found = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = path.relative_to(LIB.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The rewind modules ``name`` imports (``from rewind.x import y``: y if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m in known and m != "rewind"}


def package_of(module: str) -> str:
    return module.split(".")[1]


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the module imports behind it."""
    mods = modules()
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in mods.items():
        if name == "rewind":
            continue
        for target in sorted(imported(name, path, set(mods))):
            src, dst = package_of(name), package_of(target)
            if src != dst:
                edges.setdefault((src, dst), []).append(f"{name} -> {target}")
    return edges


def on_cycles(edges: set[tuple[str, str]]) -> set[str]:
    """The packages that reach themselves through their imports."""
    found = set()
    for start in {a for a, _ in edges}:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            for a, b in edges:
                if a == here and b not in seen:
                    seen.add(b)
                    todo.append(b)
        if start in seen:
            found.add(start)
    return found


def test_print_the_package_graph() -> None:
    edges = package_edges()
    print("\nimport graph of lib/rewind (package -> packages it imports):")
    for depth, layer in enumerate(LAYERS):
        for package in sorted(layer):
            targets = sorted({b for a, b in edges if a == package}, key=layer_of)
            print(f"  [{depth}] {package:9} -> {', '.join(targets) or '-'}")
    assert edges  # the walk found the code


def test_no_import_points_up_or_sideways() -> None:
    wrong = []
    for (src, dst), why in sorted(package_edges().items()):
        if layer_of(dst) < layer_of(src):
            wrong.append(f"{src} imports the higher {dst}: {why}")
        elif layer_of(dst) == layer_of(src) and not {src, dst} <= TOOLS:
            wrong.append(f"{src} imports {dst} of its own layer: {why}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_packages() -> None:
    edges = package_edges()
    found = on_cycles(set(edges))
    unexpected = found - PENDING_CYCLE
    on_them = {edge: why for edge, why in edges.items() if set(edge) <= unexpected}
    assert not unexpected, f"import cycle through {sorted(unexpected)}: {on_them}"
    assert found >= PENDING_CYCLE, f"fixed: take {PENDING_CYCLE - found} off PENDING_CYCLE"


def test_files_and_functions_stay_small() -> None:
    long_files, long_functions = set(), set()
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).as_posix()
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            long_files.add(rel)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.add(f"{rel}:{node.name}")
    assert long_files <= PENDING_LONG_FILES, f"over {MAX_FILE_LINES} lines: {long_files}"
    assert long_functions <= PENDING_LONG_FUNCTIONS, f"over {MAX_FUNCTION_LINES}: {long_functions}"
    done = (PENDING_LONG_FILES - long_files) | (PENDING_LONG_FUNCTIONS - long_functions)
    assert not done, f"small now: take {done} off the PENDING lists"
