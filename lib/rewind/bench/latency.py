"""End-to-end benchmark of the memory modes through the real proxy (benchmark process).

Every mode serves the same request sequence for the same workload in one run, so the
ratios against `none` (warm reuse, the insecure upper bound) compare like with like.
`fresh` starts a new interpreter per request: the cold, secure baseline.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewind.runtime import LocalRuntime, ServeOptions, free_port

WORKLOADS_DIR = Path(__file__).resolve().parents[3] / "bench" / "workloads"
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Case:
    """One workload with its request payload."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """Measured figures for one (workload, mode)."""

    workload: str
    mode: str
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_1: float
    throughput_2: float
    rss_kib: int
    pss_kib: int
    after_reply_ms: float | None = None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


class KeepAliveClient:
    """One persistent HTTP connection, as an invoker keeps to a warm container."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def run(self, body: bytes) -> int:
        self.conn.request("POST", "/run", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.conn.close()


def _tree_memory(rt: LocalRuntime) -> tuple[int, int]:
    import os

    rss = pss = 0
    todo = [rt.proc.pid]
    while todo:
        pid = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    todo.extend(int(p) for p in fh.read().split())
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss, pss


def _closed_loop(port: int, body: bytes, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        client = KeepAliveClient(port)
        try:
            while time.monotonic() < stop:
                client.run(body)
                done[i] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - began)


def measure(case: Case, mode: str, requests: int, loop_s: float, metrics: bool) -> Result:
    """Start a runtime in ``mode``, warm it, and measure ``case``."""
    source = (WORKLOADS_DIR / f"{case.name}.py").read_text()
    metrics_path = Path(f"/var/tmp/rewind-bench-metrics-{free_port()}.jsonl")
    env: dict[str, str] = {}
    if metrics:
        env["REWIND_METRICS_FILE"] = str(metrics_path)
    opts = ServeOptions(port=free_port(), memory=mode, files="off", extra_env=env)
    with LocalRuntime(opts) as rt:
        rt.wait_ready()
        init = rt.client.init(source, env=SINGLE_THREADED)
        if init.status != 200:
            raise RuntimeError(f"{case.name}/{mode}: /init failed: {init.body!r}")
        body = json.dumps({"value": case.params}).encode()
        client = KeepAliveClient(opts.port)
        try:
            for _ in range(min(20, requests)):
                client.run(body)
            lat = []
            for _ in range(requests):
                t0 = time.perf_counter()
                status = client.run(body)
                lat.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    raise RuntimeError(f"{case.name}/{mode}: /run answered {status}")
        finally:
            client.close()
        rss, pss = _tree_memory(rt)
        tp1 = _closed_loop(opts.port, body, 1, loop_s)
        tp2 = _closed_loop(opts.port, body, 2, loop_s)
    after = None
    if metrics and metrics_path.exists():
        rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x]
        if rows:
            after = statistics.median(r["after_reply_ms"] for r in rows)
        metrics_path.unlink()
    return Result(
        workload=case.name,
        mode=mode,
        requests=requests,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        mean_ms=statistics.fmean(lat),
        throughput_1=tp1,
        throughput_2=tp2,
        rss_kib=rss,
        pss_kib=pss,
        after_reply_ms=after,
    )


def table(results: list[Result]) -> str:
    """A plain-text table with ratios against `none` of the same workload."""
    base = {r.workload: r for r in results if r.mode == "none"}
    head = (
        f"{'workload':<9} {'mode':<6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'p50 x':>7} {'req/s 1c':>9} {'req/s 2c':>9} {'PSS MiB':>8} "
        f"{'PSS x':>6} {'after-reply ms':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        b = base.get(r.workload)
        delta = r.p50_ms - b.p50_ms if b else float("nan")
        ratio = r.p50_ms / b.p50_ms if b else float("nan")
        pss_ratio = r.pss_kib / b.pss_kib if b and b.pss_kib else float("nan")
        after = f"{r.after_reply_ms:.3f}" if r.after_reply_ms is not None else "-"
        lines.append(
            f"{r.workload:<9} {r.mode:<6} {r.p50_ms:8.3f} {r.p95_ms:8.3f} {r.p99_ms:8.3f} "
            f"{delta:+8.3f} {ratio:7.2f} {r.throughput_1:9.1f} {r.throughput_2:9.1f} "
            f"{r.pss_kib / 1024:8.1f} {pss_ratio:6.2f} {after:>14}"
        )
    return "\n".join(lines)


def to_json(results: list[Result]) -> list[dict[str, Any]]:
    """Results as JSON-ready dicts."""
    return [asdict(r) for r in results]
