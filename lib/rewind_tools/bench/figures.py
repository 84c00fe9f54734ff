"""The report's PNG figures, drawn with matplotlib's Agg backend (benchmark process).

One function per figure; each takes the measured results and a path and writes one PNG.
Figures that span orders of magnitude (latency, throughput) use log axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rewind_tools.bench.density import MixedResult  # noqa: E402
from rewind_tools.bench.latency import Result  # noqa: E402

COLORS = {
    "none": "#4c72b0",
    "fork": "#dd8452",
    "fork-warm": "#55a868",
    "inplace": "#937860",
    "fresh": "#c44e52",
    "container": "#8172b3",
}


def _workloads(results: list[Result]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r.workload not in seen:
            seen.append(r.workload)
    return seen


def _modes(results: list[Result]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r.mode not in seen:
            seen.append(r.mode)
    return seen


def _grid(n: int) -> tuple[Any, list[Any]]:
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _grouped_bars(
    ax: Any,
    results: list[Result],
    value: Callable[[Result], float | None],
    ylabel: str,
    log: bool = False,
) -> None:
    workloads, modes = _workloads(results), _modes(results)
    width = 0.8 / max(1, len(modes))
    for j, mode in enumerate(modes):
        xs, ys = [], []
        for i, w in enumerate(workloads):
            for r in results:
                v = value(r) if r.workload == w and r.mode == mode else None
                if v is not None and v > 0:
                    xs.append(i + (j - (len(modes) - 1) / 2) * width)
                    ys.append(v)
        ax.bar(xs, ys, width, label=mode, color=COLORS.get(mode))
    ax.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(results: list[Result], path: Path) -> None:
    """Fig. 1: the latency CDF of every mode, one panel per workload."""
    workloads = _workloads(results)
    fig, axes = _grid(len(workloads))
    for ax, w in zip(axes, workloads, strict=True):
        for r in results:
            if r.workload != w or not r.latencies_ms:
                continue
            xs = sorted(r.latencies_ms)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=r.mode, color=COLORS.get(r.mode))
        ax.set_xscale("log")
        ax.set_title(w)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def latency_bars(results: list[Result], path: Path) -> None:
    """Fig. 1b: p50 and p99 per workload and mode."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4))
    _grouped_bars(a, results, lambda r: r.p50_ms, "p50 latency (ms)", log=True)
    _grouped_bars(b, results, lambda r: r.p99_ms, "p99 latency (ms)", log=True)
    _save(fig, path)


def throughput(results: list[Result], path: Path) -> None:
    """Fig. 2: closed-loop throughput with 1 and 2 clients."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4))
    _grouped_bars(a, results, lambda r: r.throughput_1, "req/s, 1 client", log=True)
    _grouped_bars(b, results, lambda r: r.throughput_2, "req/s, 2 clients", log=True)
    _save(fig, path)


def memory(results: list[Result], path: Path) -> None:
    """Fig. 3: RSS and PSS of each runtime's process tree."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4))
    _grouped_bars(a, results, lambda r: r.pss_kib / 1024, "PSS (MiB)")
    _grouped_bars(b, results, lambda r: r.rss_kib / 1024, "RSS (MiB)")
    _save(fig, path)


def rewind_cost(results: list[Result], files_results: list[Result], path: Path) -> None:
    """Fig. 4: work after each reply (memory / files) and checkpoint (/init) time."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4))
    rewound = [r for r in results if r.after_reply_ms is not None]
    _grouped_bars(a, rewound, lambda r: r.after_reply_ms, "after-reply work, p50 (ms)", log=True)
    a.set_title("memory rewind (files off)")
    labels, mem, fil = [], [], []
    for r in files_results:
        if r.after_reply_ms is None:
            continue
        labels.append(f"{r.workload}\n{r.mode}")
        f = r.files_ms or 0.0
        fil.append(f)
        mem.append(max(0.0, r.after_reply_ms - f))
    b.bar(labels, mem, label="memory (standby ready)", color=COLORS["fork"])
    b.bar(labels, fil, bottom=mem, label="files (sidecar rewind)", color="#937860")
    b.set_ylabel("after-reply work, p50 (ms)")
    b.set_title("files=local")
    b.legend(fontsize=8)
    b.grid(axis="y", alpha=0.3)
    _grouped_bars(c, results, lambda r: r.init_ms, "/init incl. checkpoint (ms)", log=True)
    c.set_title("checkpoint time")
    _save(fig, path)


def run_to_run(results: list[Result], path: Path) -> None:
    """Fig. 5: latency of consecutive requests from the first one after /init."""
    workloads = _workloads(results)
    fig, axes = _grid(len(workloads))
    for ax, w in zip(axes, workloads, strict=True):
        for r in results:
            if r.workload == w and r.sequence_ms:
                xs = range(1, len(r.sequence_ms) + 1)
                color = COLORS.get(r.mode)
                ax.plot(xs, r.sequence_ms, ".-", ms=3, lw=0.8, label=r.mode, color=color)
        ax.set_yscale("log")
        ax.set_title(w)
        ax.set_xlabel("request # after /init")
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def density(
    results: list[Result], counts: dict[str, dict[str, int]], mixed: list[MixedResult], path: Path
) -> None:
    """Fig. 6: instances per 2 GiB (by PSS) and the mixed trace's throughput."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 4), gridspec_kw={"width_ratios": [3, 1]})
    _grouped_bars(
        a, results, lambda r: counts.get(r.workload, {}).get(r.mode), "warm instances in 2 GiB"
    )
    if mixed:
        b.bar(
            [m.mode for m in mixed],
            [m.throughput for m in mixed],
            color=[COLORS.get(m.mode) for m in mixed],
        )
        b.set_yscale("log")
        b.set_ylabel(f"mixed trace req/s ({mixed[0].clients} clients)")
        b.set_title(", ".join(mixed[0].workloads), fontsize=8)
        b.grid(axis="y", alpha=0.3)
    _save(fig, path)
