"""Density (Fig. 6): warm instances per memory budget and a mixed-workload trace.

Runs in the benchmark process. The instance count is computed from the PSS measured
per workload and mode (budget / PSS of one runtime's process tree). The mixed trace is
measured: one runtime per workload in the same mode, closed-loop clients cycling
round-robin over the workloads, and the PSS of all those runtimes together.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

from rewind_tools.bench.latency import Case, Result, Started, closed_loop

BUDGET_KIB = 2 * 1024 * 1024


@dataclass
class MixedResult:
    """Throughput and memory of one mode serving the mixed trace."""

    mode: str
    workloads: list[str]
    clients: int
    throughput: float
    pss_kib: int
    rss_kib: int
    init_ms: float


def instances(results: list[Result], budget_kib: int = BUDGET_KIB) -> dict[str, dict[str, int]]:
    """workload -> mode -> how many warm instances fit in the budget (by PSS)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        if r.files == "off" and r.pss_kib > 0:
            out.setdefault(r.workload, {})[r.mode] = budget_kib // r.pss_kib
    return out


def measure_mixed(cases: list[Case], mode: str, clients: int, seconds: float) -> MixedResult:
    """Serve a round-robin trace over ``cases``, one runtime per workload, in ``mode``."""
    print(f"  mixed trace / {mode} ({len(cases)} runtimes)", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        runtimes = [stack.enter_context(Started(case, mode)) for case in cases]
        ports = [st.port for st in runtimes]
        bodies = [st.body for st in runtimes]
        closed_loop(ports, bodies, 1, min(1.0, seconds / 4))  # warm every runtime
        throughput = closed_loop(ports, bodies, clients, seconds)
        rss = pss = 0
        for st in runtimes:
            r, p = st.memory()
            rss, pss = rss + r, pss + p
        init_ms = sum(st.init_ms for st in runtimes)
    return MixedResult(
        mode=mode,
        workloads=[c.name for c in cases],
        clients=clients,
        throughput=throughput,
        pss_kib=pss,
        rss_kib=rss,
        init_ms=init_ms,
    )
