"""Measure `none`, `fork` and `inplace` side by side through `rewind serve` (benchmark).

All runtimes are started first and served in interleaved batches, so the machine's
drift hits every mode alike. Prints p50 per mode and the critical-path overhead of each
rewinding mode against `none`, for hello and for a 100 MB action writing 2,000 pages.

    python -m rewind.memory.inplace_bench [--requests N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from rewind.bench.latency import KeepAliveClient, run_body
from rewind.runtime import LocalRuntime, ServeOptions, free_port

WORKLOADS = Path(__file__).resolve().parents[3] / "bench" / "workloads"
MODES = ("none", "fork", "inplace")
CASES = (("hello", {"name": "bench"}), ("bigheap", {"pages": 2000}))


def start(mode: str, workload: str) -> LocalRuntime:
    """A runtime in ``mode`` with ``workload`` initialised."""
    opts = ServeOptions(port=free_port(), memory=mode, files="off")
    rt = LocalRuntime(opts, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rt.wait_ready()
    code = (WORKLOADS / f"{workload}.py").read_text()
    resp = rt.client.init(code)
    if resp.status != 200:
        rt.stop()
        raise SystemExit(f"{mode}/{workload}: /init failed: {resp.body!r}")
    return rt


def measure(workload: str, params: Mapping[str, object], requests: int, batch: int) -> dict:
    """p50 (ms) per mode for one workload, batches interleaved across the modes."""
    body = run_body(params)
    runtimes = {mode: start(mode, workload) for mode in MODES}
    clients = {mode: KeepAliveClient(rt.client.port) for mode, rt in runtimes.items()}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:  # warm-up
            for _ in range(50):
                clients[mode].timed(body)
        done = 0
        while done < requests:
            for mode in MODES:
                times[mode].extend(clients[mode].timed(body) for _ in range(batch))
            done += batch
    finally:
        for client in clients.values():
            client.close()
        for rt in runtimes.values():
            rt.stop()
    return {mode: statistics.median(vals) for mode, vals in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(prog="rewind.memory.inplace_bench")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    report = {}
    for workload, params in CASES:
        p50 = measure(workload, params, args.requests, args.batch)
        over = {m: p50[m] - p50["none"] for m in MODES if m != "none"}
        report[workload] = {"p50_ms": p50, "overhead_ms": over}
        if over["fork"] > 0:
            report[workload]["inplace_share_of_fork_overhead"] = over["inplace"] / over["fork"]
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    for workload, row in report.items():
        p50, over = row["p50_ms"], row["overhead_ms"]
        print(
            f"{workload:8s} p50 none {p50['none']:.3f} ms, fork {p50['fork']:.3f} ms "
            f"(+{over['fork']:.3f}), inplace {p50['inplace']:.3f} ms (+{over['inplace']:.3f})"
            + (
                f"; inplace = {row['inplace_share_of_fork_overhead']:.0%} of fork's overhead"
                if "inplace_share_of_fork_overhead" in row
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
