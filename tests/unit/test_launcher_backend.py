"""Backend choice at the checkpoint: never silently insecure."""

import pytest

from rewind.launcher.backend import choose
from rewind.launcher.config import LauncherConfig
from rewind.memory import inplace
from rewind.memory.base import NoneBackend
from rewind.memory.fork import SnapshotProcess
from rewind.memory.inplace import InplaceBackend
from rewind.memory.kernel import KernelBackend
from rewind.request.errors import ConfigError


def cfg(**kw):
    return LauncherConfig(**kw)


def test_auto_prefers_the_kernel_when_the_helper_found_it():
    backend, note = choose(cfg(kernel="available"), threads=4)
    assert isinstance(backend, KernelBackend) and note is None


def test_auto_uses_inplace_when_it_works_here(monkeypatch):
    monkeypatch.setattr(inplace, "available", lambda: (True, ""))
    backend, note = choose(cfg(), threads=1)
    assert isinstance(backend, InplaceBackend) and note is None


def test_auto_uses_fork_and_says_why_when_inplace_cannot_work(monkeypatch):
    monkeypatch.setattr(inplace, "available", lambda: (False, "userfaultfd is refused"))
    backend, note = choose(cfg(), threads=1)
    assert isinstance(backend, SnapshotProcess) and backend.name == "fork"
    assert note is not None and "userfaultfd is refused" in note


def test_auto_with_threads_falls_back_to_fresh_and_says_why():
    backend, note = choose(cfg(kernel="absent"), threads=3)
    assert isinstance(backend, SnapshotProcess) and backend.name == "fresh"
    assert note is not None and "3 threads" in note and "OPENBLAS_NUM_THREADS" in note


def test_explicit_fork_with_threads_fails_clearly():
    with pytest.raises(ConfigError, match="2 threads are alive"):
        choose(cfg(memory="fork"), threads=2)


def test_explicit_kernel_on_a_stock_kernel_fails_clearly():
    with pytest.raises(ConfigError, match="REWIND kernel is absent"):
        choose(cfg(memory="kernel", kernel="absent"), threads=1)


def test_none_is_announced_as_insecure():
    backend, note = choose(cfg(memory="none"), threads=1)
    assert isinstance(backend, NoneBackend)
    assert note is not None and "insecure" in note


def test_auto_with_shared_writable_memory_runs_fresh_and_says_why():
    backend, note = choose(cfg(kernel="absent"), threads=1, shared=["anonymous"])
    assert isinstance(backend, SnapshotProcess) and backend.name == "fresh"
    assert note is not None and "shared writable memory (anonymous)" in note


@pytest.mark.parametrize("mode", ["fork", "inplace"])
def test_explicit_fork_or_inplace_with_shared_memory_fails_clearly(mode):
    with pytest.raises(ConfigError, match="MAP_PRIVATE"):
        choose(cfg(memory=mode), threads=1, shared=["/dev/zero (deleted)"])
