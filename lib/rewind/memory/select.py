"""Choosing the memory backend at the checkpoint (launcher process).

``auto`` never degrades silently: it picks the REWIND kernel when the proxy's helper
found it, else inplace when userfaultfd, PAGEMAP_SCAN and ptrace work here, else fork
(and says why); with threads alive (fork would drop them in the child) it falls back to
a fresh interpreter per request and says why. An explicit choice that cannot be
honoured fails /init with a clear message.
"""

from __future__ import annotations

from rewind.launcher.config import LauncherConfig
from rewind.launcher.errors import ConfigError
from rewind.memory.base import NoneBackend, ServeContext
from rewind.memory.fork import fork_backend, fresh_backend
from rewind.memory.kernel import KernelBackend
from rewind.memory.sysapi import thread_count

THREAD_HINT = (
    "threads are usually started by imports such as numpy's OpenBLAS; "
    "set OPENBLAS_NUM_THREADS=1 (and OMP_NUM_THREADS=1) in the action's environment"
)


class Backend:
    """A memory backend: ``serve`` answers requests until EOF, returns the exit code."""

    name: str

    def serve(self, ctx: ServeContext) -> int:  # pragma: no cover - interface
        raise NotImplementedError


def choose(cfg: LauncherConfig, threads: int | None = None) -> tuple[object, str | None]:
    """Return (backend, note); note is a message to log about the choice, if any."""
    threads = thread_count() if threads is None else threads
    mode = cfg.memory
    if mode == "auto":
        if cfg.kernel == "available":
            return KernelBackend(), None
        if threads == 1:
            from rewind.memory.inplace import InplaceBackend, available

            ok, why = available()
            if ok:
                return InplaceBackend(), None
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
        from rewind.memory.inplace import InplaceBackend, available

        ok, why = available()
        if not ok:
            raise ConfigError(f"REWIND_MEMORY=inplace is not available: {why}")
        return InplaceBackend(), None
    return NoneBackend(), (
        "REWIND_MEMORY=none: requests share one process, so each can read what earlier "
        "requests left behind. This is the insecure baseline, for comparison only."
    )
