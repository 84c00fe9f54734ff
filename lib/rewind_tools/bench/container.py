"""The `container` mode: a fresh action container per request (benchmark process).

What an OpenWhisk deployment does when it cannot reuse a container: ``docker run`` the
runtime image, ``/init`` the action (retrying until the proxy listens) and ``/run`` it,
through the invoker emulator. The latency counted is that of the request as a caller
sees it: create + init + run; log collection and ``docker rm`` happen after the clock
stops. Needs a Docker engine and the image from ``scripts/build-image.sh``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path

from rewind_tools.bench.latency import (
    SINGLE_THREADED,
    WORKLOADS_DIR,
    Case,
    Result,
    percentile,
    tree_memory,
)
from rewind_tools.invoker.emulator import DEFAULT_DOCKER, ActionSpec, Invoker

IMAGE = "whisk/action-python-v3.11-rewind:latest"


def available(image: str = IMAGE) -> str | None:
    """None when a Docker engine answers and has ``image``; otherwise why not."""
    docker = DEFAULT_DOCKER if Path(DEFAULT_DOCKER).exists() else shutil.which("docker")
    if docker is None:
        return "no docker client"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, timeout=20)
        if info.returncode != 0:
            return "the Docker engine does not answer (scripts/docker-engine.sh starts it)"
        img = subprocess.run([docker, "image", "inspect", image], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker failed: {exc}"
    if img.returncode != 0:
        return f"image {image} is missing (scripts/build-image.sh builds it)"
    return None


def _container_pid(docker: str, container_id: str) -> int:
    out = subprocess.run(
        [docker, "inspect", "-f", "{{.State.Pid}}", container_id],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return int(out.stdout.strip() or 0)


def measure_container(case: Case, requests: int, image: str = IMAGE) -> Result:
    """``requests`` cold activations of ``case``, each in a new container."""
    source = (WORKLOADS_DIR / f"{case.name}.py").read_text()
    action = ActionSpec(code=source, name=f"bench_{case.name}", env=SINGLE_THREADED)
    lat: list[float] = []
    init_ms: list[float] = []
    rss = pss = 0
    with Invoker(image, memory_mb=512, max_idle=0) as invoker:
        for i in range(requests):
            t0 = time.perf_counter()
            container = invoker.create(action.name, action.namespace)
            try:
                t1 = time.perf_counter()
                init = container.init(action.init_value(), 60.0)
                t2 = time.perf_counter()
                reply = container.post("/run", invoker.run_body(action, case.params, 60.0), 60.0)
                t3 = time.perf_counter()
                if init.status != 200 or reply.status != 200:
                    raise RuntimeError(
                        f"{case.name}/container: /init {init.status} /run {reply.status}: "
                        f"{(init.body + reply.body)[:300]!r}"
                    )
                lat.append((t3 - t0) * 1000)
                init_ms.append((t2 - t1) * 1000)
                if i == 0:
                    # One warm container's process tree, as the host sees it.
                    rss, pss = tree_memory(_container_pid(invoker.docker, container.id))
            finally:
                invoker.destroy(container)
    return Result(
        workload=case.name,
        mode="container",
        requests=requests,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        mean_ms=statistics.fmean(lat),
        throughput_1=1000 / statistics.fmean(lat),
        throughput_2=0.0,
        rss_kib=rss,
        pss_kib=pss,
        init_ms=statistics.median(init_ms),
        latencies_ms=[round(x, 3) for x in lat],
        sequence_ms=[round(x, 3) for x in lat],
    )
