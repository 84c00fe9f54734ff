"""Property test of the snapshot engine: random trees, random mutations, exact rewind.

Hypothesis builds a tree and a list of mutations; after ``rewind`` an independent walker
must find the captured (type, mode, uid, gid, content/target) for every path, and a second
diff must be empty.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewind.files.diff import diff
from rewind.files.snapshot import capture, rewind

pytestmark = pytest.mark.unit

NAMES = st.sampled_from(["a", "b", "c", "d d", "e\n", "\udcff", "f.txt"])
CONTENT = st.binary(max_size=64)
MODES = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o640])

# A tree spec: name -> bytes (file) | str (symlink target) | dict (directory).
TREES = st.recursive(
    st.one_of(CONTENT, st.sampled_from(["a", "../x", "/etc/hostname"])),
    lambda children: st.dictionaries(NAMES, children, max_size=4),
    max_leaves=20,
).filter(lambda t: isinstance(t, dict))

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "write",
                "append",
                "delete",
                "chmod",
                "mkdir",
                "create",
                "to_dir",
                "to_link",
                "rename",
                "stealth_write",
                "fifo",
            ]
        ),
        st.integers(min_value=0, max_value=1000),
        CONTENT,
        MODES,
        NAMES,
    ),
    max_size=8,
)


def build(path: str, spec: dict[str, object]) -> None:
    for name, child in spec.items():
        full = os.path.join(path, name)
        if isinstance(child, dict):
            os.mkdir(full)
            build(full, child)
        elif isinstance(child, bytes):
            with open(full, "wb") as f:
                f.write(child)
        else:
            os.symlink(str(child), full)


def state(root: str) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        s = os.lstat(full)
        body: object = None
        if stat.S_ISREG(s.st_mode):
            with open(full, "rb") as f:
                body = f.read()
        elif stat.S_ISLNK(s.st_mode):
            body = os.readlink(full)
        elif stat.S_ISDIR(s.st_mode):
            stack.extend(os.path.join(rel, n) if rel else n for n in os.listdir(full))
        out[rel] = (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, body)
    return out


def paths_of(root: str) -> list[str]:
    return sorted(p for p in state(root) if p)


def mutate(root: str, op: str, idx: int, data: bytes, mode: int, name: str) -> None:
    paths = paths_of(root)
    target = os.path.join(root, paths[idx % len(paths)]) if paths else root
    is_dir = os.path.isdir(target) and not os.path.islink(target)
    is_file = os.path.isfile(target) and not os.path.islink(target)
    if op == "write" and is_file:
        with open(target, "wb") as f:
            f.write(data)
    elif op == "append" and is_file:
        with open(target, "ab") as f:
            f.write(data or b"!")
    elif op == "stealth_write" and is_file:
        s = os.stat(target)
        with open(target, "r+b") as f:
            f.write(bytes(b ^ 0xFF for b in f.read()))
        os.utime(target, ns=(s.st_atime_ns, s.st_mtime_ns))
    elif op == "delete" and target != root:
        if is_dir:
            shutil.rmtree(target)
        else:
            os.unlink(target)
    elif op == "chmod" and not os.path.islink(target):
        os.chmod(target, mode)
    elif op in ("mkdir", "create", "fifo"):
        base = target if is_dir else root
        new = os.path.join(base, name + "-new")
        if os.path.lexists(new):
            return
        if op == "mkdir":
            os.mkdir(new)
        elif op == "fifo":
            os.mkfifo(new)
        else:
            with open(new, "wb") as f:
                f.write(data)
    elif op == "to_dir" and is_file:
        os.unlink(target)
        os.mkdir(target)
        with open(os.path.join(target, "inner"), "wb") as f:
            f.write(data)
    elif op == "to_link" and target != root:
        if is_dir:
            shutil.rmtree(target)
        else:
            os.unlink(target)
        os.symlink(root, target)
    elif op == "rename" and target != root and not is_dir:
        dest = os.path.join(root, name + "-moved")
        if not (os.path.isdir(dest) and not os.path.islink(dest)):  # no file over a directory
            os.rename(target, dest)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec=TREES, ops=OPS)
def test_rewind_restores_any_random_mutation(
    spec: dict[str, object], ops: list[tuple[str, int, bytes, int, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        build(root, spec)
        before = state(root)
        snap = capture(root, os.path.join(tmp, "store"))
        for op in ops:
            mutate(root, *op)
        rewind(snap, root)
        assert state(root) == before
        assert list(diff(snap, root)) == []
        # A second round against the refreshed record must work just as well.
        for op in reversed(ops):
            mutate(root, *op)
        rewind(snap, root)
        assert state(root) == before
        assert list(diff(snap, root)) == []
