"""Benchmark of file rewind: the REWIND engine against the paper's copy-and-mtime method.

Runs in the user's shell (``python -m rewind_tools.bench.files``). For each case it prints the
median rewind time over N runs for both methods and their ratio. It reports; it never
asserts a threshold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

from rewind.files.snapshot import capture, rewind

_FILES_PER_DIR = 20


def make_tree(root: str, entries: int, big_files: int = 0) -> list[str]:
    """A tree of ``entries`` paths (dirs of 20 small files) plus ``big_files`` 1 MB files."""
    os.makedirs(root)
    made = 0
    d = 0
    while made < entries:
        sub = os.path.join(root, f"d{d:04}")
        os.mkdir(sub)
        made += 1
        d += 1
        for i in range(min(_FILES_PER_DIR, entries - made)):
            with open(os.path.join(sub, f"f{i:02}.txt"), "w") as f:
                f.write(f"file {d}/{i}\n" * 8)
            made += 1
    big = []
    for i in range(big_files):
        path = os.path.join(root, f"big{i}.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20))
        big.append(path)
    return big


def touch_big(paths: list[str]) -> None:
    """The per-request mutation of the "changed" case: rewrite the start of each file."""
    for p in paths:
        with open(p, "r+b") as f:
            f.write(os.urandom(4096))


class PaperMethod:
    """The prototype's method: copy the whole tree at checkpoint, compare mtimes only at
    rewind, copy changed or missing files back, delete new ones."""

    def __init__(self, root: str, copy: str) -> None:
        self.root, self.copy = root, copy
        shutil.copytree(root, copy, symlinks=True)
        self.mtimes = {p: os.lstat(p).st_mtime for p in self._files(root)}

    @staticmethod
    def _files(root: str) -> list[str]:
        out: list[str] = []
        for dirpath, _, filenames in os.walk(root):
            out.extend(os.path.join(dirpath, n) for n in filenames)
        return out

    def rewind(self) -> None:
        seen = set()
        for p in self._files(self.root):
            seen.add(p)
            recorded = self.mtimes.get(p)
            if recorded is None:
                os.unlink(p)
            elif os.lstat(p).st_mtime != recorded:
                shutil.copy2(os.path.join(self.copy, os.path.relpath(p, self.root)), p)
        for p in self.mtimes.keys() - seen:
            shutil.copy2(os.path.join(self.copy, os.path.relpath(p, self.root)), p)


def _median_ms(runs: int, mutate: Callable[[], None], act: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        mutate()
        start = time.perf_counter()
        act()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run_case(base: str, name: str, entries: int, big: int, runs: int) -> tuple[str, float, float]:
    """Time one case for both methods in fresh trees under ``base``."""
    ours_root = os.path.join(base, name, "ours")
    big_paths = make_tree(ours_root, entries, big)
    snap = capture(ours_root, os.path.join(base, name, "store"))
    rewind(snap, ours_root)  # warm the dentry cache, as in steady state
    ours = _median_ms(runs, lambda: touch_big(big_paths), lambda: rewind(snap, ours_root))

    paper_root = os.path.join(base, name, "paper")
    paper_big = make_tree(paper_root, entries, big)
    paper = PaperMethod(paper_root, os.path.join(base, name, "paper-copy"))
    paper.rewind()
    theirs = _median_ms(runs, lambda: touch_big(paper_big), paper.rewind)
    snap.discard()
    return name, ours, theirs


def main(argv: list[str] | None = None) -> int:
    """Run every case and print one table."""
    parser = argparse.ArgumentParser(prog="python -m rewind_tools.bench.files", description=__doc__)
    parser.add_argument("--runs", type=int, default=21, help="runs per case (median reported)")
    parser.add_argument("--dir", help="scratch directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    cases = [
        ("unchanged, 100 entries", 100, 0),
        ("unchanged, 1,000 entries", 1000, 0),
        ("unchanged, 10,000 entries", 10000, 0),
        ("10 changed files of 1 MB", 1000, 10),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="rewind-bench-") as base:
        rows = [run_case(base, f"case{i}", n, b, args.runs) for i, (_, n, b) in enumerate(cases)]
    print(f"file rewind, median of {args.runs} runs (ms)")
    print(f"{'case':<28} {'rewind':>10} {'paper':>10} {'paper/rewind':>13}")
    for (label, _, _), (_, ours, theirs) in zip(cases, rows, strict=True):
        ratio = theirs / ours if ours > 0 else float("inf")
        print(f"{label:<28} {ours:>10.3f} {theirs:>10.3f} {ratio:>12.2f}x")
    print("rewind: diff on (type, mode, uid, gid, size, inode, mtime, ctime) + apply;")
    print("paper: copytree at checkpoint, mtime-only compare, copy back changed files.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
