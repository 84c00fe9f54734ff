"""Choosing the memory backend at the checkpoint: launcher policy (launcher process).

``auto`` never degrades silently: it picks the REWIND kernel when the proxy's helper
found it, else inplace when userfaultfd, PAGEMAP_SCAN and ptrace work here, else fork
(and says why); with threads alive (fork would drop them in the child) it falls back to
a fresh interpreter per request and says why. An explicit choice that cannot be
honoured fails /init with a clear message. Shared writable memory mapped by the action
(``mmap.mmap(-1, n)`` is shared by default) outlives forked and rewound processes alike:
``auto`` then runs each request in a fresh process, and ``fork``/``inplace`` refuse.
"""

from __future__ import annotations

from rewind.launcher.config import LauncherConfig
from rewind.memory import inplace
from rewind.memory.base import Backend, NoneBackend
from rewind.memory.fork import fork_backend, fresh_backend
from rewind.memory.kernel import KernelBackend
from rewind.memory.sysapi import shared_writable_mappings, thread_count
from rewind.request.errors import ConfigError

THREAD_HINT = (
    "threads are usually started by imports such as numpy's OpenBLAS; "
    "set OPENBLAS_NUM_THREADS=1 (and OMP_NUM_THREADS=1) in the action's environment"
)


def _shared_problem(shared: list[str]) -> str | None:
    if not shared:
        return None
    return (
        f"the action maps shared writable memory ({', '.join(sorted(set(shared)))}), which "
        "no forked or rewound process gets back: what one request writes there, the next "
        "reads. Map it MAP_PRIVATE (mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE))"
    )


def choose(
    cfg: LauncherConfig, threads: int | None = None, shared: list[str] | None = None
) -> tuple[Backend, str | None]:
    """Return (backend, note); note is a message to log about the choice, if any."""
    threads = thread_count() if threads is None else threads
    shared = shared_writable_mappings() if shared is None else shared
    problem = _shared_problem(shared)
    mode = cfg.memory
    if problem and mode in ("fork", "inplace"):
        raise ConfigError(f"REWIND_MEMORY={mode} cannot isolate requests: {problem}")
    if mode == "auto":
        if cfg.kernel == "available":
            return KernelBackend(), None
        if problem:
            return fresh_backend(), (
                f"REWIND_MEMORY=auto: every request runs in a fresh process (slow): {problem}"
            )
        if threads == 1:
            ok, why = inplace.available()
            if ok:
                return inplace.InplaceBackend(), None
            return fork_backend(cfg.prefault), f"REWIND_MEMORY=auto: using fork: inplace {why}"
        return fresh_backend(), (
            f"REWIND_MEMORY=auto: {threads} threads are alive at the checkpoint and fork "
            f"would lose them, so every request runs in a fresh process (slow); {THREAD_HINT}"
        )
    if mode == "kernel":
        if cfg.kernel != "available":
            state = cfg.kernel or "not checked (the proxy did not run its rewindable helper)"
            raise ConfigError(f"REWIND_MEMORY=kernel but the REWIND kernel is {state}")
        return KernelBackend(), None
    if mode == "fork":
        if threads != 1:
            raise ConfigError(
                f"REWIND_MEMORY=fork but {threads} threads are alive at the checkpoint; "
                f"fork would silently lose them. {THREAD_HINT}, or use REWIND_MEMORY=auto"
            )
        return fork_backend(cfg.prefault), None
    if mode == "fresh":
        return fresh_backend(), None
    if mode == "inplace":
        ok, why = inplace.available()
        if not ok:
            raise ConfigError(f"REWIND_MEMORY=inplace is not available: {why}")
        return inplace.InplaceBackend(), None
    return NoneBackend(), (
        "REWIND_MEMORY=none: requests share one process, so each can read what earlier "
        "requests left behind. This is the insecure baseline, for comparison only."
    )
