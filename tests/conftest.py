"""Shared fixtures: test actions on disk and runtimes started with `rewind serve`'s code."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rewind.runtime import SENTINEL, LocalRuntime, Response, ServeOptions, free_port

TESTS = Path(__file__).parent
ACTIONS = TESTS / "actions"
# A test's tier is the folder it lives in, so `-m unit` / `-m process` select by folder.
TIERS = ("unit", "process", "container")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its folder's tier marker."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if folder in TIERS:
            item.add_marker(getattr(pytest.mark, folder))


def action_source(name: str) -> str:
    """The source of tests/actions/<name>/main.py."""
    return (ACTIONS / name / "main.py").read_text()


@dataclass
class Served:
    """A runtime started for one test, with its logs in files."""

    rt: LocalRuntime
    out_path: Path
    err_path: Path

    @property
    def client(self):
        return self.rt.client

    def init(self, action: str, main: str = "main", env: dict | None = None) -> Response:
        return self.client.init(action_source(action), main=main, env=env)

    def run(self, value: Any = None, **ctx: Any) -> Response:
        return self.client.run(value, **ctx)

    def status(self) -> dict[str, Any]:
        """GET /rewind/status."""
        return self.client.status()

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def logs_without_sentinels(self) -> str:
        text = self.stdout() + self.stderr()
        return "\n".join(x for x in text.splitlines() if x.strip() != SENTINEL)

    def children(self, pid: int | None = None) -> list[int]:
        """Direct children of ``pid`` (default: the proxy); [] once it is gone."""
        pid = self.rt.proc.pid if pid is None else pid
        out: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            pass
        return out

    def tree_pids(self) -> list[int]:
        """The proxy and every process below it."""
        pids, todo = [], [self.rt.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(self.children(pid))
        return pids

    def tree_memory_kib(self) -> dict[str, int]:
        """RSS and PSS of the whole process tree, in KiB, once it is idle.

        The next standby request process is forked just after a reply: wait for it, so
        two samples see the same set of processes.
        """
        time.sleep(0.3)
        total = {"rss": 0, "pss": 0}
        for pid in self.tree_pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    for line in fh:
                        key = line.split(":")[0].lower()
                        if key in total:
                            total[key] += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return total


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start a local runtime: ``serve(memory="fork", files="off", ...)``."""
    started: list[Served] = []

    def start(
        memory: str | None = None,
        files: str | None = "off",
        checkpoint: str | None = None,
        warmup: str | None = None,
        env: dict[str, str] | None = None,
        private: bool | None = None,
    ) -> Served:
        idx = len(started)
        out_path = tmp_path / f"stdout-{idx}.log"
        err_path = tmp_path / f"stderr-{idx}.log"
        opts = ServeOptions(
            port=free_port(),
            memory=memory,
            files=files,
            checkpoint=checkpoint,
            warmup=warmup,
            extra_env=env or {},
            private=private,
        )
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            rt = LocalRuntime(opts, stdout=out, stderr=err)
        served = Served(rt, out_path, err_path)
        started.append(served)
        rt.wait_ready()
        return served

    yield start
    for served in started:
        served.rt.stop()
