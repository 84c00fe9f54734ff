"""``rewind bench``: the benchmark suite, printed as tables and saved as JSON (benchmark).

Benchmarks report; they never fail on thresholds. ``--quick`` runs a reduced set in a
few minutes; results go to bench/results/<timestamp>/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rewind.bench.latency import Case, measure, table, to_json

QUICK = [Case("hello", {"name": "bench"}), Case("matmul", {"n": 64})]
FULL = [
    Case("hello", {"name": "bench"}),
    Case("float", {"n": 20000}),
    Case("matmul", {"n": 128}),
    Case("bigheap", {"pages": 2000}),
]
MODES = ["none", "fork", "fresh"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite and print its tables."""
    parser = argparse.ArgumentParser(prog="rewind bench")
    parser.add_argument("--quick", action="store_true", help="reduced set, a few minutes")
    parser.add_argument("--files", action="store_true", help="also run the file-rewind bench")
    parser.add_argument("--out", default="bench/results", help="where results are saved")
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else FULL
    warm_n, cold_n, loop_s = (300, 30, 2.0) if args.quick else (2000, 100, 5.0)
    results = []
    for case in cases:
        for mode in MODES:
            n = cold_n if mode == "fresh" else warm_n
            print(f"measuring {case.name} / {mode} ({n} requests)...", file=sys.stderr)
            results.append(measure(case, mode, n, loop_s, metrics=mode in ("fork", "fresh")))
    text = table(results)
    print(text)
    for workload in {r.workload for r in results}:
        by = {r.mode: r for r in results if r.workload == workload}
        if "fork" in by and "fresh" in by:
            print(
                f"{workload}: fork is {by['fresh'].p50_ms / by['fork'].p50_ms:.1f}x faster "
                f"than a fresh process per request (p50)"
            )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / stamp
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(to_json(results), indent=2))
    (out / "latency.txt").write_text(text + "\n")
    print(f"saved to {out}", file=sys.stderr)
    if args.files:
        from rewind.bench.files import main as files_main

        return files_main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
