"""The snapshot process is out of a request's reach (two identities, a root proxy).

The proxy runs as root with REWIND_USER (the function user) and REWIND_SNAPSHOT_USER;
a request tries to prlimit, renice, re-pin, reschedule, re-prioritise, stop and kill
the snapshot process. Under `none` the request's own process is the snapshot and the
change persists (the attack works, so the test can fail); under fork, fresh and inplace
every attack is refused and later requests see the defaults.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Served, action_source
from rewind.memory import identity, sysapi
from rewind.runtime import ActionClient, LocalRuntime, ServeOptions, free_port, serve_command

pytestmark = pytest.mark.process

FUNCTION_USER = "rewind-fn-test"
SNAPSHOT_USER = "rewind-snap-test"
ACTION = "attacks_snapshot_state"
SOFT_ATTACKS = ["prlimit", "nice", "affinity", "sched", "ioprio"]
STATE_KEYS = ["nofile", "nice", "affinity", "policy", "ioprio"]


@pytest.fixture(scope="session")
def users() -> tuple[pwd.struct_passwd, pwd.struct_passwd]:
    """The function user and the snapshot user (created once; CI runs as root)."""
    for name in (FUNCTION_USER, SNAPSHOT_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--user-group", "--shell",
                 "/usr/sbin/nologin", name],
                check=True,
            )  # fmt: skip
    return pwd.getpwnam(FUNCTION_USER), pwd.getpwnam(SNAPSHOT_USER)


def _reachable_script(paths: list[str]) -> str:
    """Shell that, in a private mount namespace, lets every user reach ``paths``.

    A pyenv interpreter under /root (mode 0700) cannot be executed by the test users:
    cover the closed directory with a tmpfs and bind back only what is needed.
    """
    lines = ["set -e"]
    done: set[str] = set()
    for i, path in enumerate(sorted({os.path.realpath(p) for p in paths})):
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            closed = str(Path(*parts[:depth]))
            if os.stat(closed).st_mode & stat.S_IXOTH:
                continue
            if closed in done:
                break
            done.add(closed)
            inner = str(Path(*parts[: depth + 1]))
            stash = f"/run/rewind-stash-{os.getpid()}-{i}"
            lines += [
                f"mkdir -p {stash}",
                f"mount --bind {shlex.quote(inner)} {stash}",
                f"mount -t tmpfs -o mode=0755 rewind-pass {shlex.quote(closed)}",
                f"mkdir -p {shlex.quote(inner)}",
                f"mount --move {stash} {shlex.quote(inner)}",
            ]
            break
    lines.append('exec "$@"')
    return "\n".join(lines)


class UsersRuntime(LocalRuntime):
    """LocalRuntime in a mount namespace where the test users can run this interpreter."""

    def __init__(self, opts: ServeOptions, stdout: Any, stderr: Any) -> None:
        self.opts = opts
        self.workdir = tempfile.mkdtemp(prefix="rewind-serve-", dir="/var/tmp")
        os.chmod(self.workdir, 0o755)
        cmd, env = serve_command(opts, self.workdir)
        needed = [sys.executable, sys.prefix, str(Path(__file__).resolve().parents[2] / "lib")]
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        script = _reachable_script(needed)
        cmd = [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"] + cmd
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.workdir, stdout=stdout, stderr=stderr, start_new_session=True
        )
        self.client = ActionClient(port=opts.port)


@pytest.fixture
def serve_users(tmp_path: Path, users: Any) -> Iterator[Any]:
    """Start the runtime as root with both users: ``serve_users(memory, snapshot_user=...)``."""
    started: list[Served] = []

    def start(memory: str, snapshot_user: bool = True, debug: bool = False) -> Served:
        idx = len(started)
        env = {"REWIND_USER": FUNCTION_USER, "REWIND_STOP_GRACE": "200ms"}
        if snapshot_user:
            env["REWIND_SNAPSHOT_USER"] = SNAPSHOT_USER
        if debug:
            env["REWIND_DEBUG"] = "1"
        opts = ServeOptions(port=free_port(), memory=memory, files="off", extra_env=env)
        out_path, err_path = tmp_path / f"out-{idx}.log", tmp_path / f"err-{idx}.log"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            rt = UsersRuntime(opts, out, err)
        served = Served(rt, out_path, err_path)
        started.append(served)
        rt.wait_ready()
        resp = served.client.init(action_source(ACTION))
        assert resp.status == 200, (resp.body, served.stderr())
        return served

    yield start
    for served in started:
        served.rt.stop()


def _state(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k] for k in STATE_KEYS}


def _observe(rt: Served) -> dict[str, Any]:
    resp = rt.run({"op": "observe"})
    assert resp.status == 200, (resp.body, rt.stderr())
    return dict(resp.json())


@pytest.mark.parametrize("memory", ["fork", "fresh", "inplace"])
def test_a_request_process_runs_as_the_function_user_with_no_capability(serve_users, users, memory):
    fn, snap = users
    rt = serve_users(memory)
    out = _observe(rt)
    status = out["status"]
    assert status["Uid"] == [str(fn.pw_uid)] * 4, status
    assert status["Gid"] == [str(fn.pw_gid)] * 4, status
    assert status.get("Groups", []) == []
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[key][0], 16) == 0, (key, status)
    assert out["parent_uid"] == [snap.pw_uid] * 3, out  # the snapshot process: (A, A, A)
    again = _observe(rt)
    # inplace really rewinds its one worker in place (no silent fallback to fork).
    assert (again["pid"] == out["pid"]) == (memory == "inplace"), rt.stderr()
    assert again["status"] == status


@pytest.mark.parametrize("memory", ["none", "fork", "fresh", "inplace"])
def test_a_request_cannot_degrade_the_snapshot_process(serve_users, memory):
    rt = serve_users(memory)
    before = _state(_observe(rt))
    target = "self" if memory == "none" else "parent"
    attack = rt.run({"op": "attack", "target": target, "how": SOFT_ATTACKS})
    assert attack.status == 200, attack.body
    results = attack.json()["results"]
    later = [_state(_observe(rt)) for _ in range(2)]
    if memory == "none":
        # The snapshot is the request's own process: every change stays.
        assert set(results.values()) == {"ok"}, results
        for state in later:
            changed = [k for k in STATE_KEYS if state[k] != before[k]]
            one_cpu = len(before["affinity"]) == 1
            assert changed == [k for k in STATE_KEYS if k != "affinity" or not one_cpu]
    else:
        assert set(results.values()) == {"EPERM"}, results
        assert later == [before, before]
    if memory == "inplace":
        assert "inplace: starting a new worker" not in rt.stderr()


@pytest.mark.parametrize("memory", ["fork", "fresh", "inplace"])
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_request_cannot_stop_or_kill_the_snapshot_process(serve_users, memory, how):
    rt = serve_users(memory)
    pid_before = rt.children()
    attack = rt.run({"op": "attack", "target": "parent", "how": [how]})
    assert attack.status == 200, attack.body
    assert attack.json()["results"] == {how: "EPERM"}
    for _ in range(3):
        _observe(rt)
    assert rt.children() == pid_before  # the same launcher: it was never replaced


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_a_stopped_launcher_is_resumed_by_the_proxy(serve, memory):
    # One shared identity (no REWIND_USER): the request may stop the snapshot process,
    # and the proxy, its parent, resumes it, so the stop costs at most this request.
    rt = serve(memory=memory)
    assert rt.init(ACTION).status == 200
    launcher = rt.children()
    attack = rt.run({"op": "attack", "target": "parent", "how": ["stop"]})
    assert attack.json()["results"] == {"stop": "ok"}
    for _ in range(3):
        resp = rt.run({"op": "observe"}, deadline_s=10)
        assert resp.status == 200, resp.body
    assert rt.children() == launcher


def test_without_a_snapshot_user_the_identity_is_shared_and_said_so(serve_users, users):
    # Today's behaviour, which the tests above would catch: a request can renice the
    # snapshot process, and every later request inherits it.
    fn, _ = users
    rt = serve_users("fork", snapshot_user=False, debug=True)
    out = _observe(rt)
    assert out["parent_uid"] == [fn.pw_uid] * 3
    assert "shares the function's identity" in rt.stderr()
    attack = rt.run({"op": "attack", "target": "parent", "how": ["nice"]}).json()
    assert attack["results"] == {"nice": "ok"}
    assert _observe(rt)["nice"] == 19


def test_the_capabilities_of_import_code_reach_only_the_two_users(serve_users):
    # The action's import code runs in the launcher, which holds CAP_SETUID and
    # CAP_SETGID: the seccomp filter lets them take only the two users' ids.
    out = _observe(serve_users("fork"))["import_probes"]
    assert int(out.pop("CapEff"), 16) & 0b11000000 == 0b11000000, out  # SETGID, SETUID
    assert out == {
        "setresuid_root": "EPERM",
        "setuid_other": "EPERM",
        "setgid_other": "EPERM",
        "setgroups": "EPERM",
        "userns": "EPERM",
        "ambient_raise": "EPERM",
        "setresgid_function": "ok",
        "setresuid_function": "ok",
    }


@pytest.mark.parametrize("memory", ["none", "fork", "inplace"])
def test_the_snapshot_process_ignores_signals_it_does_not_need(serve, memory):
    # One shared identity (root, no REWIND_USER): the request may signal the snapshot
    # process. It ignores what it does not need; request processes still get the
    # defaults. Under `none` the request's process is the launcher: it dies.
    rt = serve(memory=memory)
    assert rt.init(ACTION).status == 200
    before = rt.run({"op": "observe"}).json()
    launcher = rt.children()
    names = list(before["dispositions"])
    target = "self" if memory == "none" else "parent"
    for name in names:
        rt.run({"op": "attack", "target": target, "how": [name]})
    after = rt.run({"op": "observe"}, deadline_s=10)
    assert after.status == 200, after.body
    assert (rt.children() == launcher) == (memory != "none")
    if memory != "none":
        assert after.json()["dispositions"] == before["dispositions"]
        assert "Handlers.SIG_IGN" not in str(before["dispositions"])


def test_the_seccomp_filter_confines_setuid_in_a_real_process():
    # Root holds CAP_SETUID: only the filter stands between it and any uid.
    ident = identity.Identity(2001, 2002, 3001, 3002)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = {}
        try:
            sysapi.install_seccomp_filter(identity.filter_program(ident))
            for name, call in {
                "root": lambda: os.setresuid(0, 0, 0),
                "other": lambda: os.setuid(4242),
                "other_gid": lambda: os.setresgid(-1, 4242, -1),
                "groups": lambda: os.setgroups([0]),
                "function_gid": lambda: os.setresgid(3002, 3002, 2002),
                "function": lambda: os.setresuid(2001, 3001, 2001),
            }.items():
                try:
                    call()
                    out[name] = "ok"
                except OSError as exc:
                    out[name] = errno.errorcode[exc.errno]
        finally:
            os.write(w, json.dumps(out).encode())
            os._exit(0)
    os.close(w)
    got = json.loads(os.read(r, 4096))
    os.waitpid(pid, 0)
    os.close(r)
    assert got == {
        "root": "EPERM",
        "other": "EPERM",
        "other_gid": "EPERM",
        "groups": "EPERM",
        "function_gid": "ok",
        "function": "ok",
    }


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_a_leftover_process_attacking_in_a_loop_never_reaches_the_snapshot(serve_users, memory):
    # Under inplace the snapshot process takes the function user's real uid around each
    # rewind: the worker is stopped and every leftover killed before it does. (With one
    # identity this test fails: the snapshot process ends up at nice 19.)
    rt = serve_users(memory)
    before = _observe(rt)
    assert rt.run({"op": "spin", "seconds": 3}).json() == {"spinning": True}
    for _ in range(20):
        out = _observe(rt)
        assert (_state(out), out["parent_nice"]) == (_state(before), 0)
