"""The two-identity settings and the seccomp filter's program, without switching ids."""

import os

import pytest

from rewind.memory import identity, setid_filter
from rewind.request.errors import FailClosed

IDENT = identity.Identity(
    snapshot_uid=2001, snapshot_gid=2002, function_uid=3001, function_gid=3002
)


def test_no_function_ids_means_one_shared_identity():
    assert identity.Identity.from_env({}) is None
    assert identity.active() is None  # nothing switched in this process


@pytest.mark.parametrize("raw", ["x", "1", "1:2:3", "a:b"])
def test_malformed_function_ids_fail_closed(raw):
    with pytest.raises(FailClosed):
        identity.Identity.from_env({identity.ENV: raw})


def test_root_as_the_function_user_fails_closed():
    with pytest.raises(FailClosed, match="root"):
        identity.Identity.from_env({identity.ENV: "0:0"})


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_assembles_for_each_supported_machine(machine):
    prog = identity.filter_program(IDENT, machine)
    assert len(prog) % 8 == 0 and 20 < len(prog) // 8 < 256


def test_another_machine_fails_closed():
    with pytest.raises(FailClosed, match="no seccomp filter"):
        identity.filter_program(IDENT, "riscv64")


def test_a_jump_out_of_range_is_refused():
    p = setid_filter.Program()
    p.jump(0x15, 0, "far")
    for _ in range(300):
        p.ret(0)
    p.label("far")
    p.ret(0)
    with pytest.raises(ValueError):
        p.assemble()


def test_signals_are_sent_directly_when_allowed():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    identity.send_signal([pid], 9)
    identity.send_signal([pid], 9)  # a gone (zombie) process is no error
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    os.close(r)
    os.close(w)
