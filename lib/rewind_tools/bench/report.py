"""Plain-text tables and the Markdown report of one benchmark run (benchmark process).

Every table puts each figure beside its ratio against `none` (warm reuse) measured in
the same run for the same workload.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from rewind_tools.bench.density import MixedResult
from rewind_tools.bench.latency import Result, ratio
from rewind_tools.bench.latency import table as latency_table


@dataclass
class Run:
    """Everything one `rewind bench` run measured."""

    started: str
    quick: bool
    results: list[Result] = field(default_factory=list)
    files_results: list[Result] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    mixed: list[MixedResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)


def _base(results: list[Result]) -> dict[str, Result]:
    return {r.workload: r for r in results if r.mode == "none" and r.files == "off"}


def _opt(v: float | None, fmt: str = "9.3f") -> str:
    return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))


def _lines(head: str, rows: list[str]) -> str:
    return "\n".join([head, "-" * len(head), *rows])


def throughput_table(results: list[Result]) -> str:
    """Fig. 2: closed-loop req/s with 1 and 2 clients."""
    base = _base(results)
    head = (
        f"{'workload':<10} {'mode':<10} {'req/s 1c':>10} {'x none':>7} {'req/s 2c':>10} "
        f"{'x none':>7}"
    )
    rows = []
    for r in results:
        b = base.get(r.workload)
        t2 = f"{r.throughput_2:10.1f}" if r.throughput_2 else "-".rjust(10)
        rows.append(
            f"{r.workload:<10} {r.mode:<10} {r.throughput_1:10.1f} "
            f"{ratio(r.throughput_1, b.throughput_1 if b else None):7.3f} {t2} "
            f"{ratio(r.throughput_2, b.throughput_2 if b else None):7.3f}"
        )
    return _lines(head, rows)


def memory_table(results: list[Result]) -> str:
    """Fig. 3: RSS and PSS of the runtime's process tree."""
    base = _base(results)
    head = (
        f"{'workload':<10} {'mode':<10} {'RSS MiB':>8} {'PSS MiB':>8} {'+PSS MiB':>9} {'PSS x':>6}"
    )
    rows = []
    for r in results:
        if not r.pss_kib:
            continue
        b = base.get(r.workload)
        delta = (r.pss_kib - b.pss_kib) / 1024 if b else float("nan")
        rows.append(
            f"{r.workload:<10} {r.mode:<10} {r.rss_kib / 1024:8.1f} {r.pss_kib / 1024:8.1f} "
            f"{delta:+9.1f} {ratio(r.pss_kib, b.pss_kib if b else None):6.2f}"
        )
    return _lines(head, rows)


def rewind_table(results: list[Result], files_results: list[Result]) -> str:
    """Fig. 4: work after each reply and the checkpoint (/init) time."""
    base = _base(results)
    head = (
        f"{'workload':<10} {'mode':<10} {'files':<6} {'init ms':>9} {'init x':>7} "
        f"{'after p50':>9} {'after p95':>9} {'files p50':>9}"
    )
    rows = []
    for r in [*results, *files_results]:
        b = base.get(r.workload)
        rows.append(
            f"{r.workload:<10} {r.mode:<10} {r.files:<6} {r.init_ms:9.1f} "
            f"{ratio(r.init_ms, b.init_ms if b else None):7.2f} {_opt(r.after_reply_ms)} "
            f"{_opt(r.after_reply_p95_ms)} {_opt(r.files_ms)}"
        )
    return _lines(head, rows)


def run_to_run_table(results: list[Result]) -> str:
    """Fig. 5: the first requests after /init against the steady state."""
    base = _base(results)
    head = (
        f"{'workload':<10} {'mode':<10} {'#1 ms':>9} {'#2-10 ms':>9} {'#11+ ms':>9} "
        f"{'#1/#11+':>8} {'#11+ x none':>11}"
    )
    rows = []
    for r in results:
        seq = r.sequence_ms
        if not seq:
            continue
        mid = statistics.median(seq[1:10]) if len(seq) > 1 else float("nan")
        steady = statistics.median(seq[10:]) if len(seq) > 10 else mid
        b = base.get(r.workload)
        bsteady = statistics.median(b.sequence_ms[10:]) if b and len(b.sequence_ms) > 10 else None
        rows.append(
            f"{r.workload:<10} {r.mode:<10} {seq[0]:9.2f} {mid:9.2f} {steady:9.2f} "
            f"{seq[0] / steady:8.1f} {ratio(steady, bsteady):11.2f}"
        )
    return _lines(head, rows)


def density_table(run: Run) -> str:
    """Fig. 6: warm instances per 2 GiB, then the mixed trace."""
    head = f"{'workload':<10} {'mode':<10} {'PSS MiB':>8} {'in 2 GiB':>9} {'x none':>7}"
    rows = []
    for r in run.results:
        n = run.counts.get(r.workload, {}).get(r.mode)
        if n is None:
            continue
        b = run.counts[r.workload].get("none")
        rows.append(
            f"{r.workload:<10} {r.mode:<10} {r.pss_kib / 1024:8.1f} {n:9d} {ratio(n, b):7.2f}"
        )
    out = _lines(head, rows)
    if run.mixed:
        base = next((m for m in run.mixed if m.mode == "none"), None)
        head2 = (
            f"{'mixed trace':<12} {'mode':<10} {'req/s':>9} {'x none':>7} {'PSS MiB':>8} "
            f"{'PSS x':>6} {'sets in 2 GiB':>13}"
        )
        rows2 = []
        for m in run.mixed:
            sets = (2 * 1024 * 1024) // m.pss_kib if m.pss_kib else 0
            rows2.append(
                f"{len(m.workloads):>2} runtimes  {m.mode:<10} {m.throughput:9.1f} "
                f"{ratio(m.throughput, base.throughput if base else None):7.3f} "
                f"{m.pss_kib / 1024:8.1f} "
                f"{ratio(m.pss_kib, base.pss_kib if base else None):6.2f} {sets:13d}"
            )
        out += "\n\n" + _lines(head2, rows2)
        out += f"\nmixed trace workloads: {', '.join(run.mixed[0].workloads)}; "
        out += f"{run.mixed[0].clients} closed-loop clients, round-robin"
    return out


SECTIONS: list[tuple[str, str, str]] = [
    (
        "1. End-to-end latency (Fig. 7)",
        "latency",
        "Round trip of one /run over a keep-alive connection to the proxy on loopback, "
        "after 20 unmeasured requests. `+p50` and `x` are against `none` in this run.",
    ),
    (
        "2. Closed-loop throughput",
        "throughput",
        "Clients send the next request as soon as the previous answer arrives.",
    ),
    (
        "3. Memory (Fig. 5)",
        "memory",
        "RSS and PSS summed over the proxy and all its descendants (launcher, standby "
        "child, sidecar) after the measured requests; PSS splits shared pages fairly.",
    ),
    (
        "4. Rewind cost and checkpoint time (Figs. 9, 10)",
        "rewind",
        "`after`: time from a reply being sent to the next standby being ready (launcher "
        "metrics, REWIND_METRICS_FILE); `files`: the sidecar's file rewind within it. "
        "`init`: /init round trip, which includes import and the checkpoint.",
    ),
    (
        "5. Run-to-run latency (Fig. 8)",
        "run_to_run",
        "End-to-end latency of consecutive requests from the first one after /init "
        "(no timing inside the action).",
    ),
    (
        "6. Density (Fig. 6)",
        "density",
        "Warm instances that fit in 2 GiB = 2 GiB / measured PSS of one runtime. The mixed "
        "trace runs one runtime per workload and cycles over them.",
    ),
]


def tables(run: Run) -> dict[str, str]:
    """Every table of the run, by section key."""
    return {
        "latency": latency_table(run.results),
        "throughput": throughput_table(run.results),
        "memory": memory_table(run.results),
        "rewind": rewind_table(run.results, run.files_results),
        "run_to_run": run_to_run_table(run.results),
        "density": density_table(run),
    }


FIGURES = {
    "latency": ["latency_cdf.png", "latency_bars.png"],
    "throughput": ["throughput.png"],
    "memory": ["memory.png"],
    "rewind": ["rewind.png"],
    "run_to_run": ["run_to_run.png"],
    "density": ["density.png"],
}


def targets(results: list[Result]) -> list[str]:
    """The issue's targets, each stated as met or not met with the measured figure."""
    base = _base(results)
    by = {(r.workload, r.mode): r for r in results if r.files == "off"}
    out = []
    for mode in ("fork", "fork-warm", "inplace"):
        for w, b in base.items():
            r = by.get((w, mode))
            if r is None:
                continue
            if w == "hello":
                d = r.p50_ms - b.p50_ms
                verdict = "met" if d <= 0.5 else "NOT met"
                out.append(f"hello {mode}: p50 +{d:.3f} ms vs none (target <= +0.5 ms): {verdict}")
            elif b.p50_ms > 5:
                pct = (r.p50_ms / b.p50_ms - 1) * 100
                verdict = "met" if pct <= 5 else "NOT met"
                out.append(
                    f"{w} {mode}: p50 {pct:+.1f}% vs none ({b.p50_ms:.1f} ms, function > 5 ms; "
                    f"target <= +5%): {verdict}"
                )
            if b.pss_kib and r.pss_kib:
                pct = (r.pss_kib / b.pss_kib - 1) * 100
                verdict = "met" if pct <= 20 else "NOT met"
                out.append(f"{w} {mode}: PSS {pct:+.1f}% vs none (target <= +20%): {verdict}")
    fork, cont = by.get(("hello", "fork")), by.get(("hello", "container"))
    if fork and cont:
        x = cont.p50_ms / fork.p50_ms
        verdict = "met" if x >= 20 else "NOT met"
        out.append(
            f"hello: fresh container p50 {cont.p50_ms:.1f} ms / fork p50 {fork.p50_ms:.2f} ms "
            f"= {x:.0f}x (target >= 20x): {verdict}"
        )
    else:
        out.append("hello: container mode not measured in this run (target >= 20x): unknown")
    return out


def markdown(run: Run) -> str:
    """report.md: tables, targets and the embedded PNGs."""
    tabs = tables(run)
    parts = [
        f"# REWIND benchmark report ({'quick' if run.quick else 'full'} run, {run.started})",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()),
        "",
        "Modes: `none` = warm reuse (insecure upper bound); `fork` = each request in a child "
        "forked from the snapshot taken at /init; `fork-warm` = fork with the `warmup` "
        "checkpoint (the action ran once with the same payload before the snapshot); "
        "`inplace` = one worker rewound in place from outside after every reply; "
        "`fresh` = a fresh interpreter per request; `container` = a fresh container per "
        "request (invoker emulator). Ratios are against `none` from this run.",
        "",
        "## Targets",
        "",
        *[f"- {t}" for t in targets(run.results)],
        "",
    ]
    if run.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in run.notes], ""]
    for title, key, text in SECTIONS:
        parts += [f"## {title}", "", text, "", "```", tabs[key], "```", ""]
        parts += [f"![{key}]({png})" for png in FIGURES[key]]
        parts.append("")
    return "\n".join(parts)
