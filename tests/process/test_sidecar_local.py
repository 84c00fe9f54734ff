"""Process-level tests: a real ``python -m rewind.sidecar --driver local`` on a real socket.

The sidecar runs as a subprocess; SidecarClient drives it the way the launcher does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rewind.sidecar.client import SidecarClient, SidecarError

pytestmark = pytest.mark.process


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    sock: Path
    address: str
    roots: list[Path]
    snapdir: Path


def start(tmp_path: Path, roots: list[Path], extra: list[str] | None = None) -> Sidecar:
    sock = tmp_path / "run" / "s.sock"
    snapdir = tmp_path / "snaps"
    cmd = [
        sys.executable,
        "-m",
        "rewind.sidecar",
        "--driver",
        "local",
        "--listen",
        f"unix:{sock}",
        "--paths",
        ":".join(map(str, roots)),
        "--snapshot-dir",
        str(snapdir),
        *(extra or []),
    ]
    env = {k: v for k, v in os.environ.items() if k != "REWIND_DEBUG"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"sidecar did not start: {err.decode()}")
        time.sleep(0.01)
    return Sidecar(proc, sock, f"unix:{sock}", roots, snapdir)


def stop(side: Sidecar) -> None:
    if side.proc.poll() is None:
        side.proc.send_signal(signal.SIGTERM)
    if side.proc.stdout is not None and not side.proc.stdout.closed:
        side.proc.communicate(timeout=10)
    side.proc.wait(timeout=10)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    roots = [tmp_path / "tmpdir", tmp_path / "action"]
    for r in roots:
        r.mkdir()
    (roots[0] / "keep.txt").write_text("keep")
    (roots[1] / "main.py").write_text("def main(a): return a\n")
    side = start(tmp_path, roots)
    yield side
    stop(side)


def raw_exchange(sock_path: Path, payload: bytes, replies: int) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < replies:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_checkpoint_then_rewind_restores_every_root(sidecar: Sidecar) -> None:
    tmpdir, action = sidecar.roots
    with SidecarClient(sidecar.address) as client:
        assert client.status()["checkpointed"] is False
        cp = client.checkpoint()
        assert cp["entries"] == 4
        (tmpdir / "keep.txt").write_text("dirty")
        (tmpdir / "leak.txt").write_text("secret of request 1")
        (action / "main.py").unlink()
        m = client.rewind()
        assert (m["removed"], m["restored"]) == (1, 2)
        assert sorted(os.listdir(tmpdir)) == ["keep.txt"]
        assert (tmpdir / "keep.txt").read_text() == "keep"
        assert (action / "main.py").read_text() == "def main(a): return a\n"
        assert client.rewind()["restored"] == 0
        status = client.status()
        assert status["checkpointed"] is True
        assert status["rewinds"] == 2 and status["checkpoints"] == 1
        assert status["last"]["restored"] == 0


def test_rewind_before_checkpoint_is_an_error_reply(sidecar: Sidecar) -> None:
    with SidecarClient(sidecar.address) as client:
        with pytest.raises(SidecarError) as info:
            client.rewind()
        assert info.value.op == "rewind"
        assert "no checkpoint" in info.value.message
        assert client.status()["errors"] == 1  # the connection is still usable


def test_bad_requests_each_get_one_error_reply(sidecar: Sidecar) -> None:
    payload = (
        b"this is not json\n"
        + b'{"op": "format-disk", "id": 2}\n'
        + b'{"op": "status"}\n'
        + b'{"op": "status", "id": 9, "pad": "'
        + b"z" * 70000
        + b'"}\n'
        + b'{"op": "status", "id": 5}\n'
    )
    replies = raw_exchange(sidecar.sock, payload, 5)
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert replies[1]["id"] == 2 and "unknown op" in str(replies[1]["error"])
    assert "malformed JSON" in str(replies[0]["error"])
    assert "longer than" in str(replies[3]["error"])
    assert replies[4]["id"] == 5 and replies[4]["op"] == "status"


def test_socket_is_private(sidecar: Sidecar) -> None:
    assert stat.S_IMODE(os.stat(sidecar.sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sidecar.snapdir).st_mode) == 0o700


def test_sigterm_exits_cleanly_and_quietly(sidecar: Sidecar) -> None:
    with SidecarClient(sidecar.address) as client:
        client.checkpoint()
        client.rewind()
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.proc.wait(timeout=10) == 0
    out, err = sidecar.proc.communicate()
    assert out == b"" and err == b""  # quiet in normal operation
    assert not sidecar.sock.exists()
    assert os.listdir(sidecar.snapdir) == []


def test_client_reconnects_once_after_sidecar_restart(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    first = start(tmp_path, [root])
    client = SidecarClient(first.address)
    client.checkpoint()
    stop(first)
    second = start(tmp_path, [root])
    try:
        assert client.status()["checkpointed"] is False  # a new connection to the new one
    finally:
        client.close()
        stop(second)


def test_client_error_when_nothing_listens(tmp_path: Path) -> None:
    client = SidecarClient(f"unix:{tmp_path}/none.sock", timeout=1)
    with pytest.raises(SidecarError, match="cannot connect"):
        client.status()


def test_refuses_to_protect_root_or_snapshot_parent(tmp_path: Path) -> None:
    for paths in ("/", str(tmp_path)):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "rewind.sidecar",
                "--listen",
                f"unix:{tmp_path}/x.sock",
                "--paths",
                paths,
                "--snapshot-dir",
                str(tmp_path / "snaps"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 2
        assert "refusing to protect" in res.stderr


def test_debug_logs_one_line_per_rewind(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    os.environ["REWIND_DEBUG"] = "1"
    try:
        sock = tmp_path / "d.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rewind.sidecar",
                "--listen",
                f"unix:{sock}",
                "--paths",
                str(root),
                "--snapshot-dir",
                str(tmp_path / "snaps"),
            ],
            stderr=subprocess.PIPE,
        )
    finally:
        del os.environ["REWIND_DEBUG"]
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with SidecarClient(f"unix:{sock}") as client:
        client.checkpoint()
        client.rewind()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    lines = [ln for ln in err.decode().splitlines() if " rewind " in ln]
    assert len(lines) == 1 and "scanned=" in lines[0]


def test_tcp_transport(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rewind.sidecar",
            "--listen",
            f"tcp:127.0.0.1:{port}",
            "--paths",
            str(root),
            "--snapshot-dir",
            str(tmp_path / "snaps"),
        ],
    )
    try:
        client = SidecarClient(f"tcp:127.0.0.1:{port}", timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.checkpoint()
                break
            except SidecarError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        (root / "x").write_text("x")
        assert client.rewind()["removed"] == 1
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
