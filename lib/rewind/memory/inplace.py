"""The inplace backend: userfaultfd write-protection and copy-back (launcher process).

Like the REWIND kernel backend, requests run in the launcher itself: it checkpoints
once, right before serving, and rewinds after every reply, from the same place in the
loop. The C extension ``rewind.memory._inplace`` does the work: at the checkpoint it
copies every writable private mapping to a backup between guard pages and
write-protects it with a userfaultfd in WP_ASYNC mode; at a rewind it closes the
request's descriptors, restores cwd, umask, signal dispositions and mask and interval
timers, resets brk, unmaps new mappings and re-creates removed ones, asks PAGEMAP_SCAN
which pages were written, copies them back, re-protects them and resumes inside the
checkpoint call, so the loop's own frames and heap are exactly the checkpoint's.
Threads the request started are ended (a realtime signal whose handler exits the
thread) and its processes are killed before that. Nothing is reseeded: every request
starts with the checkpoint's ``random`` state, which holds no request data.
"""

from __future__ import annotations

import gc
import importlib
import random
from types import ModuleType

from rewind.launcher.errors import EXIT_OK, FailClosed
from rewind.memory import sysapi
from rewind.memory.base import ServeContext, serve_one_in_process
from rewind.memory.fork import kill_descendants

# How long threads started by a request may take to exit before we fail closed.
THREAD_KILL_TIMEOUT_S = 2.0


def _extension() -> tuple[ModuleType | None, str]:
    try:
        ext = importlib.import_module("rewind.memory._inplace")
    except ImportError as exc:
        return None, f"the C extension rewind.memory._inplace is not built ({exc})"
    return ext, ""


def available() -> tuple[bool, str]:
    """(True, "") when in-place rewind can work in this process, else (False, why)."""
    ext, why = _extension()
    if ext is None:
        return False, why
    problem = ext.probe()
    if problem is not None:
        return False, str(problem) + (
            "; in Docker, run with a seccomp profile that allows userfaultfd "
            "(see docs/MEMORY-INPLACE.md)"
        )
    threads = sysapi.thread_count()
    if threads != 1:
        return False, f"{threads} threads are alive at the checkpoint (it needs exactly one)"
    return True, ""


class InplaceBackend:
    """Serve requests in this process, rewinding it in place after every reply."""

    name = "inplace"

    def serve(self, ctx: ServeContext) -> int:
        """Answer requests until EOF; a rewind that cannot be completed fails closed."""
        ext, why = _extension()
        if ext is None:
            raise FailClosed(why)
        sysapi.become_subreaper()
        gc.collect()
        try:
            # Returns False now and True after every rewind, with this frame's locals
            # and the whole heap as they are at this line.
            resumed = ext.checkpoint()
        except OSError as exc:
            raise FailClosed(f"in-place checkpoint failed: {exc}") from None
        if resumed:
            # Every rewind returns to the same random state: draw a fresh seed, or each
            # request would see the same "random" numbers.
            random.seed()
        if resumed and ctx.metrics_fd is not None:
            stats = ext.stats()
            ctx.record(
                rewind_ms=stats["last_ms"],
                pages=stats["pages_copied"],
                recreated=stats["recreated"],
            )

        def quiesce() -> None:
            # Threads and processes the request left share this process's stdin: they
            # must be gone before the reply lets the proxy send the next request.
            try:
                ext.kill_threads(THREAD_KILL_TIMEOUT_S)
            except OSError as exc:
                raise FailClosed(f"in-place rewind failed: {exc}") from None
            kill_descendants()

        if not serve_one_in_process(ctx, catch_exit=True, before_reply=quiesce):
            return EXIT_OK
        ctx.rewind_files()
        try:
            ext.rewind()  # does not return: resumes in checkpoint() above
        except OSError as exc:
            raise FailClosed(f"in-place rewind failed: {exc}") from None
        raise FailClosed("in-place rewind returned")  # pragma: no cover
