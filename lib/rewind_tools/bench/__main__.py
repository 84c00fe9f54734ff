"""``rewind bench``: the benchmark suite, printed as tables and saved with figures (benchmark).

Benchmarks report; they never fail on thresholds. ``--quick`` runs a reduced set in a
few minutes; results go to bench/results/<timestamp>/ (report.md, JSON, PNGs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rewind_tools.bench import report, suite


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print its tables and save the report."""
    parser = argparse.ArgumentParser(prog="rewind bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced set, under five minutes")
    parser.add_argument(
        "--container", action="store_true", help="with --quick: also a fresh container per request"
    )
    parser.add_argument("--files", action="store_true", help="also run the file-rewind bench")
    parser.add_argument("--out", default="bench/results", help="where results are saved")
    args = parser.parse_args(argv)
    plan = suite.Plan.make(args.quick, args.container)
    began = time.monotonic()
    run = suite.execute(plan)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    tabs = suite.save(run, out)
    for title, key, _ in report.SECTIONS:
        print(f"\n{title}\n\n{tabs[key]}")
    print("\nTargets\n\n" + "\n".join(report.targets(run.results)))
    for note in run.notes:
        print(f"note: {note}")
    print(f"saved to {out}/report.md ({time.monotonic() - began:.0f} s)", file=sys.stderr)
    if args.files:
        from rewind_tools.bench.files import main as files_main

        return files_main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
