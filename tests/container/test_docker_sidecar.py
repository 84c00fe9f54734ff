"""The host sidecar's ``docker`` driver against real containers of the runtime image.

A real host process ``python -m rewind.sidecar --driver docker`` listens on a unix socket
in a host directory that every container mounts (read-only) at /run/rewind-host; the
containers run with REWIND_FILES=docker, so their launcher checkpoints at init and rewinds
after every request through it. Containers are created by the invoker emulator (ports on
127.0.0.1 only); nothing here sends traffic to the Docker bridge.

The attack tests plant symlinks to host paths, hard links, odd names and a concurrent
renamer in a container, and check that a host sentinel stays untouched; others check that
identity comes from the kernel (a forged ``container`` field is ignored, a host process is
refused) and that a layer bigger than REWIND_HOST_MAX_BYTES is refused at the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rewind.sidecar.client import SidecarClient, SidecarError
from rewind_tools.invoker import ActionSpec, Invoker
from rewind_tools.invoker.emulator import Container

pytestmark = pytest.mark.container

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
SOCK_IN_CONTAINER = "/run/rewind-host/sidecar.sock"
MAX_BYTES = 16 << 20


@dataclass
class HostSidecar:
    proc: subprocess.Popen[bytes]
    hostdir: Path
    snapdir: Path
    log: Path

    @property
    def sock(self) -> Path:
        return self.hostdir / "sidecar.sock"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_sidecar(base: Path, listen: str | None = None) -> HostSidecar:
    hostdir, snapdir = base / "run-host", base / "snaps"
    hostdir.mkdir(parents=True, exist_ok=True)
    os.chmod(hostdir, 0o755)  # the mount point: the function user must traverse it
    log = base / "sidecar.log"
    env = dict(os.environ, REWIND_DEBUG="1", REWIND_HOST_MAX_BYTES=str(MAX_BYTES))
    cmd = [sys.executable, "-m", "rewind.sidecar", "--driver", "docker"]
    cmd += ["--listen", listen or f"unix:{hostdir}/sidecar.sock", "--snapshot-dir", str(snapdir)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    side = HostSidecar(proc, hostdir, snapdir, log)
    deadline = time.monotonic() + 20
    while not (side.sock.exists() or (listen and snapdir.exists() and _listening(listen))):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"host sidecar did not start: {side.log_text()}")
        time.sleep(0.02)
    return side


def _listening(listen: str) -> bool:
    host, _, port = listen[4:].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.2).close()
    except OSError:
        return False
    return True


def stop_sidecar(side: HostSidecar) -> int:
    if side.proc.poll() is None:
        side.proc.send_signal(signal.SIGTERM)
    return side.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def sidecar(runtime_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSidecar]:
    side = start_sidecar(tmp_path_factory.mktemp("docker-sidecar"))
    yield side
    assert stop_sidecar(side) == 0, side.log_text()
    assert not side.sock.exists()
    assert not [p for p in side.snapdir.iterdir()], "snapshots left after SIGTERM"


@pytest.fixture
def dinv(runtime_image: str, sidecar: HostSidecar) -> Iterator[Invoker]:
    """An invoker whose containers use the host sidecar, as in docs/DEPLOY.md."""
    inv = Invoker(
        runtime_image,
        memory_mb=256,
        env={"REWIND_FILES": "docker", "REWIND_SIDECAR": f"unix:{SOCK_IN_CONTAINER}"},
        extra_args=["-v", f"{sidecar.hostdir}:/run/rewind-host:ro"],
        max_idle=4,
    )
    try:
        yield inv
    finally:
        inv.close()


@pytest.fixture
def host_sentinel(tmp_path: Path) -> Iterator[Path]:
    """A host directory with a file no container may ever touch (through the sidecar)."""
    outside = tmp_path / "host-outside"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("host data")
    os.chmod(sentinel, 0o644)
    os.chmod(tmp_path, 0o755)
    yield sentinel


def host_state(directory: Path) -> dict[str, tuple[int, int, int, int, bytes | None]]:
    out = {}
    for p in sorted(directory.rglob("*")):
        st = os.lstat(p)
        body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(directory))] = (
            st.st_mode,
            st.st_uid,
            st.st_mtime_ns,
            st.st_ino,
            body,
        )
    return out


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {proc.stderr}")
    return proc.stdout


def in_container(c: Container, script: str, user: str = "1001", timeout: float = 120) -> Any:
    """Run Python in the container as ``user``; its last stdout line is parsed as JSON."""
    out = docker("exec", "-u", user, c.id, "python", "-c", script, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def snapshot_dirs(side: HostSidecar) -> set[str]:
    return {p.name for p in side.snapdir.iterdir()} if side.snapdir.exists() else set()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# -- the action used by most tests ---------------------------------------------------------

OBSERVER = r"""
import hashlib, json, os, stat

ROOTS = ["/tmp", "/home/rewind", os.path.dirname(os.path.abspath(__file__))]

# import time = before the checkpoint: this is the state every request must see
with open("/tmp/base.txt", "w") as f:
    f.write("base")
os.makedirs("/tmp/basedir/sub", exist_ok=True)
for i in range(20):
    with open(f"/tmp/basedir/f{i}", "w") as f:
        f.write(f"file {i}")
with open("/home/rewind/notes.txt", "w") as f:
    f.write("notes")


def observe():
    seen = {}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        body = hashlib.sha256(f.read()).hexdigest()[:16]
                elif stat.S_ISLNK(st.st_mode):
                    body = "-> " + os.readlink(p)
                else:
                    body = ""
                seen[p] = [oct(st.st_mode), st.st_uid, st.st_mtime_ns, body]
    return seen


def main(args):
    seen = observe()
    mode = args.get("mode", "mutate")
    here = ROOTS[2]
    if mode == "mutate":
        with open("/tmp/base.txt", "a") as f:
            f.write(" + request data")
        with open("/tmp/new.txt", "w") as f:
            f.write("secret of an earlier request")
        os.makedirs("/tmp/newdir/a/b", exist_ok=True)
        os.remove("/tmp/basedir/f3")
        os.chmod("/tmp/basedir/f4", 0o600)
        os.rename("/tmp/basedir/sub", "/tmp/moved")
        os.remove("/home/rewind/.profile")  # an image file: a whiteout in the upper layer
        with open("/home/rewind/.bashrc", "a") as f:  # an image file: a copy-up
            f.write("echo leaked\n")
        with open("/home/rewind/notes.txt", "w") as f:
            f.write("overwritten")
        with open(os.path.join(here, "planted.py"), "w") as f:
            f.write("SECRET = 1\n")
    elif mode == "attack":
        target = args["target"]
        hostdir = os.path.dirname(target)
        os.remove("/tmp/base.txt")
        os.symlink(target, "/tmp/base.txt")  # a checkpointed file becomes a host symlink
        os.rename("/tmp/basedir", "/tmp/basedir.old")
        os.symlink(hostdir, "/tmp/basedir")  # a checkpointed dir becomes a host symlink
        os.remove("/home/rewind/notes.txt")
        os.symlink("../../../../../../.." + target, "/home/rewind/notes.txt")
        os.link("/tmp/basedir.old/f1", "/tmp/hard")  # a hard link into the own tree
        os.remove("/tmp/basedir.old/f2")
        os.link("/tmp/basedir.old/f1", "/tmp/basedir.old/f2")
        for name in ["..", "...", "..evil", "a\nb", "x/../../y"]:
            try:
                with open(os.path.join("/tmp", name.replace("/", "_")), "w") as f:
                    f.write("name trick")
            except OSError:
                pass
        os.makedirs("/tmp/deep/" + "/".join(["d"] * 60), exist_ok=True)
        os.symlink(hostdir, "/tmp/deep/d/up")
    return {"seen": seen}
"""


def observer() -> ActionSpec:
    return ActionSpec(code=OBSERVER, name="observer")


def test_every_request_sees_the_checkpointed_files(dinv: Invoker, sidecar: HostSidecar) -> None:
    first = dinv.invoke(observer(), {"mode": "mutate"}, timeout_s=60)
    assert first.status == 200, (first, sidecar.log_text()[-3000:])
    baseline = first.result["seen"]
    assert "/tmp/base.txt" in baseline and "/home/rewind/.profile" in baseline
    assert not any("planted" in p or "new" in p for p in baseline)
    for _ in range(4):
        later = dinv.invoke(observer(), {"mode": "mutate"}, timeout_s=60)
        assert later.status == 200, later
        assert later.container == first.container
        assert later.result["seen"] == baseline
    (container,) = dinv.containers
    status = in_container(
        container,
        "import json; from rewind.sidecar.client import SidecarClient as C; "
        f"print(json.dumps(C('unix:{SOCK_IN_CONTAINER}').status()))",
    )
    assert status["checkpointed"] is True and status["container"] == container.id
    assert status["rewinds"] >= 5 and status["checkpoints"] == 1
    assert status["last"]["removed"] > 0 and status["last"]["restored"] > 0
    assert container.id in snapshot_dirs(sidecar)


def test_function_cannot_take_a_second_checkpoint(dinv: Invoker) -> None:
    first = dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    assert first.status == 200, first
    (container,) = dinv.containers
    reply = in_container(
        container,
        "import json\nfrom rewind.sidecar.client import SidecarClient as C, SidecarError\n"
        f"c = C('unix:{SOCK_IN_CONTAINER}')\n"
        "open('/tmp/mine', 'w').write('x')\n"
        "try:\n    c.checkpoint(); print(json.dumps('taken'))\n"
        "except SidecarError as e:\n    print(json.dumps(str(e)))\n",
    )
    assert "checkpoint already" in reply
    # /tmp/mine was written between requests (not by one), so the next request still
    # sees it; the rewind after that request removes it: the checkpoint was not moved.
    dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    again = dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    assert again.result["seen"] == first.result["seen"]


def test_symlinks_hard_links_and_names_never_reach_the_host(
    dinv: Invoker, sidecar: HostSidecar, host_sentinel: Path
) -> None:
    outside = host_sentinel.parent
    before = host_state(outside)
    first = dinv.invoke(observer(), {"mode": "attack", "target": str(host_sentinel)}, 60)
    assert first.status == 200, first
    baseline = first.result["seen"]
    for _ in range(3):
        later = dinv.invoke(observer(), {"mode": "attack", "target": str(host_sentinel)}, 60)
        assert later.status == 200, (later, sidecar.log_text()[-3000:])
        assert later.result["seen"] == baseline
    assert host_state(outside) == before
    assert host_sentinel.read_text() == "host data"


def test_renaming_directories_during_rewinds_never_reaches_the_host(
    dinv: Invoker, sidecar: HostSidecar, host_sentinel: Path
) -> None:
    outside = host_sentinel.parent
    before = host_state(outside)
    first = dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    assert first.status == 200, first
    (container,) = dinv.containers
    # A process outliving its request (as if it escaped the launcher's sweep) keeps
    # swapping checkpointed dirs for host symlinks and changing files under them.
    loop = (
        "i=0; while :; do i=$((i+1)); "
        "mv /tmp/basedir /tmp/bd.$i 2>/dev/null; ln -s " + str(outside) + " /tmp/basedir; "
        "echo x > /tmp/bd.$i/f1 2>/dev/null; rm -f /tmp/basedir; "
        "mv /tmp/bd.$i /tmp/basedir 2>/dev/null; "
        "mv /home/rewind /tmp/h 2>/dev/null; mv /tmp/h /home/rewind 2>/dev/null; "
        "ln -sfn " + str(outside) + " /tmp/basedir/sub 2>/dev/null; done"
    )
    docker("exec", "-d", "-u", "1001", container.id, "sh", "-c", loop)
    time.sleep(0.5)
    result = in_container(
        container,
        "import json\nfrom rewind.sidecar.client import SidecarClient as C, SidecarError\n"
        f"c = C('unix:{SOCK_IN_CONTAINER}')\nok = bad = 0\n"
        "errors = set()\n"
        "for _ in range(300):\n"
        "    try:\n        c.rewind(); ok += 1\n"
        "    except SidecarError as e:\n        bad += 1; errors.add(str(e)[:160])\n"
        "print(json.dumps([ok, bad, sorted(errors)[:8]]))\n",
    )
    errors = result.pop()
    docker("exec", "-u", "0", container.id, "pkill", "-u", "1001", "-f", "sh -c", check=False)
    docker("exec", "-u", "0", container.id, "sh", "-c", "kill -9 -1 2>/dev/null", check=False)
    print("rewinds ok/failed during the rename storm:", result, errors)
    assert sum(result) == 300
    assert host_state(outside) == before
    assert host_sentinel.read_text() == "host data"
    assert sidecar.proc.poll() is None


def test_identity_comes_from_the_kernel_not_the_request(
    dinv: Invoker, sidecar: HostSidecar
) -> None:
    # Two actions → two containers, both checkpointed.
    a = dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    b = dinv.invoke(ActionSpec(code=OBSERVER, name="other"), {"mode": "none"}, timeout_s=60)
    assert a.status == b.status == 200
    ca = next(c for c in dinv.containers if c.name == a.container)
    cb = next(c for c in dinv.containers if c.name == b.container)
    assert ca.id != cb.id
    # B holds state of its own after its checkpoint (as during a request).
    docker("exec", "-u", "1001", cb.id, "sh", "-c", "echo b > /tmp/b-own")
    for _ in range(3):
        assert dinv.invoke(observer(), {"mode": "mutate"}, timeout_s=60).container == a.container
    # A forges B's id in its requests: the field is ignored, A's own layer is used.
    replies = in_container(
        ca,
        "import json, socket\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect('{SOCK_IN_CONTAINER}')\n"
        "out = []\n"
        f"forged = '{cb.id}'\n"
        "for op in ['rewind', 'status', 'checkpoint']:\n"
        "    msg = {'op': op, 'id': 7, 'container': forged}\n"
        "    s.sendall(json.dumps(msg).encode() + b'\\n')\n"
        "    buf = b''\n"
        "    while not buf.endswith(b'\\n'):\n"
        "        buf += s.recv(65536)\n"
        "    out.append(json.loads(buf))\n"
        "print(json.dumps(out))\n",
    )
    rewind_reply, status_reply, checkpoint_reply = replies
    assert rewind_reply["ok"] is True, rewind_reply
    assert status_reply["metrics"]["container"] == ca.id
    assert checkpoint_reply["ok"] is False and "already" in checkpoint_reply["error"]
    assert docker("exec", cb.id, "cat", "/tmp/b-own").strip() == "b"
    # B's next request still sees it; the rewind after that request removes it.
    again = dinv.invoke(ActionSpec(code=OBSERVER, name="other"), {"mode": "none"}, timeout_s=60)
    assert again.container == b.container and "/tmp/b-own" in again.result["seen"]
    assert docker("exec", cb.id, "ls", "/tmp/b-own", check=False) == ""


def test_a_host_process_is_refused(sidecar: HostSidecar) -> None:
    with SidecarClient(f"unix:{sidecar.sock}", timeout=10) as client:
        for call in (client.status, client.checkpoint, client.rewind):
            with pytest.raises(SidecarError, match="not in a container"):
                call()


def test_tcp_peer_without_a_container_address_is_refused(
    runtime_image: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    side = start_sidecar(tmp_path, listen=f"tcp:127.0.0.1:{port}")
    try:
        client = SidecarClient(f"tcp:127.0.0.1:{port}", timeout=10)
        with client, pytest.raises(SidecarError, match="not one running container"):
            client.status()
    finally:
        assert stop_sidecar(side) == 0


def test_a_layer_bigger_than_the_limit_fails_closed(dinv: Invoker, sidecar: HostSidecar) -> None:
    code = (
        "import os\n"
        f"with open('/tmp/fill', 'wb') as f:\n    f.write(os.urandom({MAX_BYTES + (4 << 20)}))\n"
        "def main(args):\n    return {'ok': True}\n"
    )
    act = dinv.invoke(ActionSpec(code=code, name="filler"), {}, timeout_s=60)
    assert act.status != 200, act
    assert "REWIND_HOST_MAX_BYTES" in json.dumps(act.result) + act.stderr + sidecar.log_text()
    assert dir_size(sidecar.snapdir) < MAX_BYTES


def test_snapshots_are_dropped_when_containers_go_away(dinv: Invoker, sidecar: HostSidecar) -> None:
    act = dinv.invoke(observer(), {"mode": "none"}, timeout_s=60)
    assert act.status == 200
    (container,) = dinv.containers
    assert container.id in snapshot_dirs(sidecar)
    dinv.destroy(container)
    deadline = time.monotonic() + 15
    while container.id in snapshot_dirs(sidecar) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert container.id not in snapshot_dirs(sidecar)
