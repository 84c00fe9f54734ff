"""Prefaulting and in-place rewind against plain fork, in one run (benchmark process).

``python -m rewind_tools.bench.prefault``: for hello and a 100 MB action writing 2,000 pages,
the p50 round trip of `none`, `fork`, `fork` + `REWIND_PREFAULT=on` and `inplace` (when
available), their overhead against `none`, and the page faults a request takes after it
arrives (from the launcher's REWIND_METRICS_FILE). Requests are spaced by ``--gap``
milliseconds, as an invoker's requests to one container usually are: prefaulting works in
the time between requests. Reports only; never fails on a threshold.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rewind.runtime import LocalRuntime, ServeOptions, free_port

WORKLOADS = Path(__file__).resolve().parents[3] / "bench" / "workloads"
MODES = [("none", "off"), ("fork", "off"), ("fork", "on"), ("inplace", "off")]
CASES = [("hello", {}), ("bigheap", {"pages": 2000})]


def _inplace_available() -> bool:
    try:
        from rewind.memory.inplace import available
    except ImportError:
        return False
    return available()[0]


def measure(workload: str, params: dict, memory: str, prefault: str, n: int, gap: float):
    """(p50 ms, median request faults or None) for one mode."""
    metrics = Path(tempfile.mkdtemp(prefix="rewind-pf-", dir="/var/tmp")) / "m.jsonl"
    env = {"REWIND_PREFAULT": prefault, "REWIND_METRICS_FILE": str(metrics)}
    opts = ServeOptions(port=free_port(), memory=memory, files="off", extra_env=env)
    with open(os.devnull, "wb") as quiet, LocalRuntime(opts, stdout=quiet, stderr=quiet) as rt:
        rt.wait_ready()
        source = (WORKLOADS / f"{workload}.py").read_text()
        if rt.client.init(source, env={"OPENBLAS_NUM_THREADS": "1"}).status != 200:
            raise RuntimeError(f"{workload}/{memory}: /init failed")
        conn = http.client.HTTPConnection("127.0.0.1", opts.port, timeout=60)
        body = json.dumps({"value": params}).encode()
        lat = []
        for i in range(n + 20):
            time.sleep(gap)
            t0 = time.perf_counter()
            conn.request("POST", "/run", body)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{workload}/{memory}: /run answered {resp.status}")
            if i >= 20:
                lat.append((time.perf_counter() - t0) * 1000)
        conn.close()
    faults = None
    if metrics.exists():
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x]
        vals = [r["request_faults"] for r in rows[20:] if "request_faults" in r]
        faults = statistics.median(vals) if vals else None
        metrics.unlink()
    metrics.parent.rmdir()
    return statistics.median(lat), faults


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print one table."""
    parser = argparse.ArgumentParser(prog="python -m rewind_tools.bench.prefault")
    parser.add_argument("-n", type=int, default=200, help="measured requests per mode")
    parser.add_argument("--gap", type=float, default=20.0, help="ms between requests")
    args = parser.parse_args(argv)
    modes = [m for m in MODES if m[0] != "inplace" or _inplace_available()]
    print(
        f"{'workload':<9} {'mode':<14} {'p50 ms':>8} {'overhead ms':>12} "
        f"{'x fork ovh':>10} {'req faults':>10}"
    )
    for workload, params in CASES:
        base = fork_ovh = None
        for memory, pf in modes:
            name = memory + ("+prefault" if pf == "on" else "")
            print(f"measuring {workload} / {name}...", file=sys.stderr)
            p50, faults = measure(workload, params, memory, pf, args.n, args.gap / 1000)
            if base is None:
                base = p50
            ovh = p50 - base
            if name == "fork":
                fork_ovh = ovh
            share = f"{ovh / fork_ovh:10.2f}" if fork_ovh and memory != "none" else f"{'-':>10}"
            flt = f"{faults:10.0f}" if faults is not None else f"{'-':>10}"
            print(f"{workload:<9} {name:<14} {p50:8.3f} {ovh:+12.3f} {share} {flt}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
