"""The benchmark plan and its execution, one measurement at a time (benchmark process).

A plan names the workloads, the modes, request counts and durations. Runs are strictly
sequential: the machine has few cores and concurrent runs would measure each other.
Progress goes to stderr; the results are returned as a :class:`Run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewind_tools.bench import container, density, figures, report
from rewind_tools.bench.latency import MODES, Case, Result, measure

QUICK_CASES = [
    Case("hello", {"name": "bench"}),
    Case("float", {"n": 20000}),
    Case("matmul", {"n": 128}),
    Case("chameleon", {"rows": 10, "cols": 15}),
]
FULL_CASES = [
    Case("hello", {"name": "bench"}),
    Case("float", {"n": 50000}),
    Case("matmul", {"n": 256}),
    Case("linpack", {"n": 300}),
    Case("pyaes", {"length": 4096}),
    Case("chameleon", {"rows": 10, "cols": 15}),
    Case("graph", {"n": 1000}),
    Case("imports", {"n": 6}),
    Case("image", {"size": 256}),
    Case("ml", {"docs": 200}),
    Case("bigheap", {"pages": 2000}),
]
# Workloads run again with file rewind on (files="local"); tmpwrite leaves files behind.
FILES_CASES = [
    Case("hello", {"name": "bench"}),
    Case("tmpwrite", {"files": 10, "kib": 64}),
]


@dataclass
class Plan:
    """What one `rewind bench` run measures."""

    quick: bool
    cases: list[Case]
    modes: tuple[str, ...] = MODES
    warm_requests: int = 300
    fresh_requests: int = 30
    loop_s: float = 2.0
    files_cases: list[Case] = field(default_factory=lambda: list(FILES_CASES))
    container_cases: list[str] = field(default_factory=lambda: ["hello", "float"])
    container_requests: int = 20
    mixed_cases: list[str] = field(
        default_factory=lambda: ["hello", "float", "matmul", "linpack", "chameleon"]
    )
    mixed_modes: tuple[str, ...] = ("none", "fork", "fresh")
    mixed_s: float = 10.0

    @classmethod
    def make(cls, quick: bool, with_container: bool) -> Plan:
        """The quick or the full plan; container mode only when asked (quick) or always."""
        if quick:
            plan = cls(
                quick=True,
                cases=list(QUICK_CASES),
                warm_requests=200,
                fresh_requests=20,
                loop_s=1.0,
                container_requests=5,
                container_cases=["hello", "float"],
                mixed_cases=["hello", "float", "matmul", "chameleon"],
                mixed_s=4.0,
            )
        else:
            plan = cls(
                quick=False,
                cases=list(FULL_CASES),
                warm_requests=300,
                fresh_requests=30,
                loop_s=2.0,
            )
        if quick and not with_container:
            plan.container_cases = []
        return plan


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else ""
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load at start": _loadavg(),
    }


def _loadavg() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[0]
    except OSError:
        return "?"


def execute(plan: Plan) -> report.Run:
    """Measure everything in ``plan``, one runtime at a time."""
    run = report.Run(started=time.strftime("%Y-%m-%d %H:%M:%S"), quick=plan.quick)
    run.machine = machine()
    for case in plan.cases:
        for mode in plan.modes:
            n = plan.fresh_requests if mode == "fresh" else plan.warm_requests
            warm = 5 if mode == "fresh" else 20
            _progress(f"{case.name} / {mode}: {warm} + {n} requests, {plan.loop_s:g} s loops")
            try:
                run.results.append(measure(case, mode, n, plan.loop_s, warmup=warm))
            except Exception as exc:  # a broken mode is reported, not fatal
                run.notes.append(f"{case.name} / {mode} failed: {exc}")
                _progress(f"  failed: {exc}")
    if plan.container_cases:
        why = container.available()
        if why is not None:
            run.notes.append(f"container mode skipped: {why}")
            _progress(f"container mode skipped: {why}")
        for case in [c for c in plan.cases if c.name in plan.container_cases] if not why else []:
            _progress(f"{case.name} / container: {plan.container_requests} cold containers")
            try:
                _insert(run.results, container.measure_container(case, plan.container_requests))
            except Exception as exc:
                run.notes.append(f"{case.name} / container failed: {exc}")
                _progress(f"  failed: {exc}")
    if os.geteuid() == 0:
        for case in plan.files_cases:
            n = max(50, plan.warm_requests // 4)
            _progress(f"{case.name} / fork, files=local: {n} requests")
            try:
                run.files_results.append(measure(case, "fork", n, 0.0, files="local"))
            except Exception as exc:
                run.notes.append(f"{case.name} / fork files=local failed: {exc}")
                _progress(f"  failed: {exc}")
    else:
        run.notes.append("files=local variant skipped: it needs root (a private /tmp)")
    run.counts = density.instances(run.results)
    by_name = {c.name: c for c in plan.cases}
    mixed_cases = [by_name[n] for n in plan.mixed_cases if n in by_name]
    for mode in plan.mixed_modes:
        try:
            run.mixed.append(density.measure_mixed(mixed_cases, mode, 2, plan.mixed_s))
        except Exception as exc:
            run.notes.append(f"mixed trace / {mode} failed: {exc}")
            _progress(f"  failed: {exc}")
    # The load at the end includes the suite's own work; the load at start does not.
    run.machine["load at end"] = _loadavg()
    if float(run.machine["load at start"].replace("?", "0")) > 0.7:
        run.notes.append(
            f"other work was running on the machine (load average {run.machine['load at start']} "
            "before the suite started): absolute figures and tails are inflated; compare "
            "modes within the run"
        )
    return run


def _insert(results: list[Result], extra: Result) -> None:
    """Put ``extra`` right after the last result of the same workload."""
    idx = max((i for i, r in enumerate(results) if r.workload == extra.workload), default=-1)
    results.insert(idx + 1, extra)


def save(run: report.Run, out: Path) -> dict[str, str]:
    """Write JSON, text tables, PNGs and report.md into ``out``; return the tables."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "started": run.started,
        "quick": run.quick,
        "machine": run.machine,
        "notes": run.notes,
        "results": [dataclasses.asdict(r) for r in run.results],
        "files_results": [dataclasses.asdict(r) for r in run.files_results],
        "instances_in_2gib": run.counts,
        "mixed": [dataclasses.asdict(m) for m in run.mixed],
        "targets": report.targets(run.results),
    }
    (out / "results.json").write_text(json.dumps(data, indent=1))
    tabs = report.tables(run)
    for key, text in tabs.items():
        (out / f"{key}.txt").write_text(text + "\n")
        (out / f"{key}.json").write_text(json.dumps(_section_json(run, key), indent=1))
    figures.latency(run.results, out / "latency_cdf.png")
    figures.latency_bars(run.results, out / "latency_bars.png")
    figures.throughput(run.results, out / "throughput.png")
    figures.memory([r for r in run.results if r.pss_kib], out / "memory.png")
    figures.rewind_cost(run.results, run.files_results, out / "rewind.png")
    figures.run_to_run(run.results, out / "run_to_run.png")
    figures.density(run.results, run.counts, run.mixed, out / "density.png")
    (out / "report.md").write_text(report.markdown(run))
    return tabs


_FIELDS = {
    "latency": ["p50_ms", "p95_ms", "p99_ms", "mean_ms", "requests"],
    "throughput": ["throughput_1", "throughput_2"],
    "memory": ["rss_kib", "pss_kib"],
    "rewind": ["files", "init_ms", "after_reply_ms", "after_reply_p95_ms", "files_ms"],
    "run_to_run": ["sequence_ms"],
}


def _section_json(run: report.Run, key: str) -> Any:
    """The figures behind one table, with ratios against `none`."""
    if key == "density":
        return {
            "instances_in_2gib": run.counts,
            "mixed": [dataclasses.asdict(m) for m in run.mixed],
        }
    rows = run.results + (run.files_results if key == "rewind" else [])
    base = {r.workload: r for r in run.results if r.mode == "none"}
    out = []
    for r in rows:
        row: dict[str, Any] = {"workload": r.workload, "mode": r.mode}
        b = base.get(r.workload)
        for f in _FIELDS[key]:
            v = getattr(r, f)
            row[f] = v
            bv = getattr(b, f) if b else None
            if isinstance(v, int | float) and isinstance(bv, int | float) and bv:
                row[f"{f}_vs_none"] = round(v / bv, 4)
        if key == "latency":
            row["latencies_ms"] = r.latencies_ms
        out.append(row)
    return out
