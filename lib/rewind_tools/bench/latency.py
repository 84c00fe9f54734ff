"""End-to-end benchmark of the memory modes through the real proxy (benchmark process).

Every mode serves the same request sequence for the same workload in one run, so the
ratios against `none` (warm reuse, the insecure upper bound) compare like with like.
`fresh` starts a new interpreter per request: the cold, secure baseline. `fork-warm` is
`fork` with the `warmup` checkpoint policy: the action runs once with the benchmark's
own payload before the snapshot, so lazy initialisation is part of the snapshot.
`inplace` is one worker rewound from outside after every reply (auto's choice where
userfaultfd works); where it cannot work the suite notes the failure and goes on.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewind.runtime import LocalRuntime, ServeOptions, free_port

WORKLOADS_DIR = Path(__file__).resolve().parents[3] / "bench" / "workloads"
SINGLE_THREADED = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
MODES = ("none", "fork", "fork-warm", "inplace", "fresh")
WARMUP_REQUESTS = 20


@dataclass
class Case:
    """One workload with its request payload."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """Measured figures for one (workload, mode, files) run."""

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
    init_ms: float
    files: str = "off"
    after_reply_ms: float | None = None
    after_reply_p95_ms: float | None = None
    files_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    sequence_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


class KeepAliveClient:
    """One persistent HTTP connection, as an invoker keeps to a warm container."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def run(self, body: bytes) -> int:
        """POST one /run and read the whole answer; returns the HTTP status."""
        self.conn.request("POST", "/run", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def timed(self, body: bytes) -> float:
        """One /run, its round trip in ms; a non-200 answer raises."""
        t0 = time.perf_counter()
        status = self.run(body)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise RuntimeError(f"/run answered {status}")
        return elapsed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def run_body(params: Mapping[str, Any]) -> bytes:
    """A /run envelope with the invoker's context keys; the same bytes every request."""
    body = {
        "value": params,
        "namespace": "guest",
        "action_name": "/guest/bench",
        "action_version": "0.0.1",
        "activation_id": "0" * 32,
        "transaction_id": "0" * 32,
        "deadline": str(int((time.time() + 3600) * 1000)),
    }
    return json.dumps(body).encode()


def tree_memory(root_pid: int) -> tuple[int, int]:
    """RSS and PSS (KiB) summed over ``root_pid`` and all its descendants."""
    rss = pss = 0
    todo = [root_pid]
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


def closed_loop(ports: list[int], bodies: list[bytes], clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` closed-loop clients, each cycling over (port, body) pairs."""
    done = [0] * clients
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conns = {port: KeepAliveClient(port) for port in set(ports)}
        k = i  # clients start at different points of the cycle
        try:
            while time.monotonic() < stop:
                j = k % len(ports)
                if conns[ports[j]].run(bodies[j]) != 200:
                    errors.append(f"port {ports[j]}")
                    return
                done[i] += 1
                k += 1
        finally:
            for conn in conns.values():
                conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"closed loop: a /run failed ({errors[0]})")
    return sum(done) / (time.monotonic() - began)


def serve_options(case: Case, mode: str, files: str, env: dict[str, str]) -> ServeOptions:
    """The runtime settings of one mode (`fork-warm` = fork + the warmup checkpoint)."""
    if mode == "fork-warm":
        return ServeOptions(
            port=free_port(),
            memory="fork",
            files=files,
            checkpoint="warmup",
            warmup=json.dumps(case.params),
            extra_env=env,
        )
    return ServeOptions(port=free_port(), memory=mode, files=files, extra_env=env)


class Started:
    """A LocalRuntime in one mode with the workload initialised (benchmark process)."""

    def __init__(self, case: Case, mode: str, files: str = "off", metrics: bool = False) -> None:
        self.case = case
        self.mode = mode
        self.metrics_path = Path(f"/var/tmp/rewind-bench-metrics-{free_port()}-{os.getpid()}.jsonl")
        env = {"REWIND_METRICS_FILE": str(self.metrics_path)} if metrics else {}
        self.opts = serve_options(case, mode, files, env)
        # The action's output and sentinels are not ours to print; stderr is kept for
        # error messages (closed in __exit__).
        self.log = tempfile.TemporaryFile(prefix="rewind-bench-log-", dir="/var/tmp")  # noqa: SIM115
        self.rt = LocalRuntime(self.opts, stdout=subprocess.DEVNULL, stderr=self.log)
        self.init_ms = 0.0
        self.body = run_body(case.params)

    def __enter__(self) -> Started:
        try:
            self.rt.wait_ready()
            source = (WORKLOADS_DIR / f"{self.case.name}.py").read_text()
            t0 = time.perf_counter()
            init = self.rt.client.init(source, env=SINGLE_THREADED)
            self.init_ms = (time.perf_counter() - t0) * 1000
            if init.status != 200:
                raise RuntimeError(
                    f"{self.case.name}/{self.mode}: /init failed: {init.body!r}; "
                    f"log: {self.log_tail()}"
                )
        except BaseException:
            self.rt.stop()
            self.log.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.rt.stop()
        self.log.close()
        self.metrics_path.unlink(missing_ok=True)

    def log_tail(self, size: int = 600) -> str:
        """The end of the runtime's stderr."""
        self.log.flush()
        self.log.seek(max(0, self.log.seek(0, os.SEEK_END) - size))
        return self.log.read().decode("utf-8", "replace")

    @property
    def port(self) -> int:
        """The proxy's loopback port."""
        return self.opts.port

    def memory(self, samples: int = 5) -> tuple[int, int]:
        """RSS and PSS (KiB) of the proxy's whole process tree, idle between requests.

        Waits for the after-reply work (the next standby) to finish, then takes the
        median of a few samples: a single one can miss a standby still being forked.
        """
        time.sleep(0.3)
        taken = []
        for _ in range(samples):
            taken.append(tree_memory(self.rt.proc.pid))
            time.sleep(0.05)
        taken.sort(key=lambda rp: rp[1])
        return taken[len(taken) // 2]

    def metrics(self) -> list[dict[str, float]]:
        """The launcher's per-request rewind timings so far."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(x) for x in self.metrics_path.read_text().splitlines() if x]


def measure(
    case: Case,
    mode: str,
    requests: int,
    loop_s: float,
    metrics: bool = True,
    files: str = "off",
    warmup: int = WARMUP_REQUESTS,
) -> Result:
    """Start a runtime in ``mode``, send the same request ``requests`` times, and measure.

    The first ``warmup`` answers are kept only in ``sequence_ms`` (run-to-run figure);
    percentiles come from the ``requests`` answers after them.
    """
    with Started(case, mode, files, metrics and mode != "none") as st:
        client = KeepAliveClient(st.port)
        try:
            warm = [client.timed(st.body) for _ in range(warmup)]
            lat = [client.timed(st.body) for _ in range(requests)]
        except RuntimeError as exc:
            raise RuntimeError(f"{case.name}/{mode}: {exc}; log: {st.log_tail()}") from None
        finally:
            client.close()
        rss, pss = st.memory()
        rows = st.metrics()
        tp1 = closed_loop([st.port], [st.body], 1, loop_s) if loop_s > 0 else 0.0
        tp2 = closed_loop([st.port], [st.body], 2, loop_s) if loop_s > 0 else 0.0
        init_ms = st.init_ms
    # The first metrics row belongs to the first reply; skip the warm-up replies' rows.
    steady = rows[len(warm) :] or rows
    after = [r["after_reply_ms"] for r in steady]
    files_ms = [r.get("files_ms", 0.0) for r in steady]
    return Result(
        workload=case.name,
        mode=mode,
        files=files,
        requests=requests,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        mean_ms=statistics.fmean(lat),
        throughput_1=tp1,
        throughput_2=tp2,
        rss_kib=rss,
        pss_kib=pss,
        init_ms=init_ms,
        after_reply_ms=statistics.median(after) if after else None,
        after_reply_p95_ms=percentile(after, 95) if after else None,
        files_ms=statistics.median(files_ms) if files_ms else None,
        latencies_ms=[round(x, 4) for x in lat],
        sequence_ms=[round(x, 4) for x in (warm + lat)[:100]],
    )


def ratio(value: float, base: float | None) -> float:
    """value / base, NaN without a base."""
    return value / base if base else float("nan")


def table(results: list[Result]) -> str:
    """Latency table (Fig. 7) with ratios against `none` of the same workload."""
    base = {r.workload: r for r in results if r.mode == "none" and r.files == "off"}
    head = (
        f"{'workload':<10} {'mode':<10} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} "
        f"{'+p50 ms':>9} {'p50 x':>8} {'p99 x':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        b = base.get(r.workload)
        delta = r.p50_ms - b.p50_ms if b else float("nan")
        lines.append(
            f"{r.workload:<10} {r.mode:<10} {r.p50_ms:9.3f} {r.p95_ms:9.3f} {r.p99_ms:9.3f} "
            f"{delta:+9.3f} {ratio(r.p50_ms, b.p50_ms if b else None):8.2f} "
            f"{ratio(r.p99_ms, b.p99_ms if b else None):8.2f}"
        )
    return "\n".join(lines)


def to_json(results: list[Result]) -> list[dict[str, Any]]:
    """Results as JSON-ready dicts."""
    return [asdict(r) for r in results]
