"""Kernel IPC objects and keyrings as channels between requests (`rewind serve`).

Request 1 leaves a secret in a SysV message queue, shared memory segment or semaphore
(fixed key), a POSIX message queue (fixed name) or a keyring; request 2 looks for it.
Under `none` (no memory rewind, no file sidecar) it is found, which proves the test can
fail; under every secure backend with the sidecar (`--files local`) it is gone. Every
runtime here has private namespaces (`private=True` for the baseline), so nothing reaches
the machine's IPC namespace; keyrings are per user (root's, as `rewind serve` runs the
function as root here), so every test removes its key afterwards.
"""

from __future__ import annotations

import platform

import pytest

from rewind.memory import keyrings

CHANNELS = ("msg", "shm", "sem", "mq", "keyring_user", "keyring_session", "keyring_user_session")
BACKENDS = ("none", "fork", "inplace", "fresh")
ADD_KEY = {"x86_64": 248, "aarch64": 217}[platform.machine()]
KEYCTL_INVALIDATE = 21
SECRET = "4242"  # numeric: a semaphore holds it too


def start(serve, backend: str, action: str = "ipc_channels"):
    if backend == "none":
        rt = serve(memory="none", files="off", private=True)
    else:
        rt = serve(memory=backend, files="local")
    resp = rt.init(action)
    assert resp.status == 200, (resp.body, rt.stderr())
    return rt


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_secret_left_in_an_ipc_object_or_keyring_is_gone(serve, backend, channel):
    rt = start(serve, backend)
    try:
        first = rt.run({"op": "peek", "channel": channel}).json()
        assert first["found"] is None, first
        left = rt.run({"op": "leave", "channel": channel, "secret": SECRET})
        assert left.json() == {"left": True}, left.body
        found = rt.run({"op": "peek", "channel": channel}).json()["found"]
        assert found == (SECRET if backend == "none" else None), found
    finally:
        rt.run({"op": "clean", "channel": channel})


def test_an_object_that_existed_at_the_checkpoint_and_changed_fails_closed(serve):
    rt = serve(memory="fork", files="local")
    assert rt.init("ipc_at_import").status == 200, rt.stderr()
    assert rt.run({}).json() == {"queued": 0}
    assert rt.run({"secret": SECRET}).json() == {"queued": 0}  # sent after the reply
    refused = rt.run({})
    assert refused.status == 503, refused.body
    assert "existed at the checkpoint and a request changed it" in rt.client.status()["fail_reason"]


def test_an_object_that_existed_at_the_checkpoint_is_kept_while_unchanged(serve):
    rt = serve(memory="fork", files="local")
    assert rt.init("ipc_at_import").status == 200, rt.stderr()
    for _ in range(3):
        assert rt.run({}).json() == {"queued": 0}


@pytest.mark.parametrize("backend", ["fork", "inplace"])
def test_shared_memory_attached_at_import_is_refused_at_the_checkpoint(serve, backend):
    rt = serve(memory=backend, files="local")
    assert rt.init("ipc_shm_at_import").status == 502
    rt.rt.stop()
    assert "shared writable memory" in rt.stderr() and "SYSV" in rt.stderr(), rt.stderr()


def test_keyctl_refused_means_no_request_can_store_a_key(serve):
    """Where keyctl is refused (Docker's seccomp profiles: tests/container) the runtime's
    clearing does nothing; here keyctl works, so the probe sees it allowed and the
    attacks above show the clearing."""
    rt = serve(memory="fork", files="local")
    assert rt.init("ipc_channels").status == 200
    assert rt.run({"op": "probe_keys"}).json() == {"add_key": 0, "request_key": 0, "keyctl": 0}


def test_the_runtime_does_not_possess_the_callers_session_keyring(serve):
    # A key in the session keyring of whoever runs `rewind serve` (a developer's login)
    # is out of reach even of the insecure baseline: the runtime has its own session.
    data = b"caller-secret"
    key = keyrings._libc.syscall(
        ADD_KEY, b"user", b"rewind-attack", data, len(data), keyrings.KEY_SPEC_SESSION_KEYRING
    )
    assert key > 0
    try:
        rt = serve(memory="none", files="off", private=True)
        assert rt.init("ipc_channels").status == 200
        found = rt.run({"op": "peek", "channel": "keyring_session"}).json()["found"]
        assert found is None, found
    finally:
        keyrings.keyctl(KEYCTL_INVALIDATE, key)
