"""Per-process kernel state does not cross requests, and the in-place rewinder trusts
nothing the worker says.

Each attack changes one piece of kernel state a process may change on itself, storing a
secret-derived value where it can; the next request reads it. Under `none` it succeeds
(the test can fail); under `fork` and `inplace` it does not, and the next request works
normally. Under inplace without REWIND_DEBUG the runtime's reasons never reach stderr.
"""

from __future__ import annotations

import secrets

import pytest

BACKENDS = ["none", "fork", "inplace"]

# Some need privileges the test runner (root) has; in the image the function user cannot
# make them, and tests/container runs the unprivileged ones. TSC faulting (PR_SET_TSC)
# kills the launcher under `none` at its next clock read, in the request that set it, so
# it cannot show a leak here: tests/unit/test_inplace.py covers it.
ATTACKS = [
    "rlimit_soft",
    "rlimit_hard",
    "rlimit_core",
    "affinity",
    "nice",
    "comm",
    "personality",
    "timerslack",
    "pdeathsig",
    "subreaper",
    "thp_disable",
    "mdwe",
    "cpuid",
    "mce_kill",
    "keepcaps",
    "securebits",
    "dumpable",
    "no_new_privs",
    "speculation",
    "futex_hash",
    "ksm",
    "capbset",
    "sigaltstack",
    "robust_list",
    "itimer_real",
    "itimer_prof",
    "itimer_virtual",
    "posix_timer",
    "sched_policy",
    "ioprio",
    "oom_score_adj",
    "coredump_filter",
    "mlockall",
    "mlock",
    "wipeonfork",
    "dontfork",
    "madv_flags",
    "mempolicy",
    "seccomp",
    "landlock",
    "pgrp",
    "uts_namespace",
]


def secret() -> str:
    return "S3CR3T-" + secrets.token_hex(12)


@pytest.fixture(params=BACKENDS)
def memory(request):
    return request.param


def start(serve, memory, action, debug=False):
    rt = serve(memory=memory, env={"REWIND_DEBUG": "1"} if debug else None)
    resp = rt.init(action)
    assert resp.status == 200, resp.body
    return rt


def observe(rt, op):
    resp = rt.run({"op": op, "do": "get"})
    return resp.json() if resp.status == 200 else f"failed: {resp.status}"


@pytest.mark.parametrize("op", ATTACKS)
def test_per_process_state_does_not_reach_the_next_request(serve, memory, op):
    rt = start(serve, memory, "state_attacks")
    before = observe(rt, op)
    assert isinstance(before, dict), before
    rt.run({"op": op, "do": "set", "secret": secret()})
    after = observe(rt, op)
    leaked = after != before
    assert leaked == (memory == "none"), f"{memory} {op}: {before} -> {after}"
    if memory != "none":
        health = rt.run({"do": "health"})
        assert health.status == 200 and health.json() == {"fork": 0, "allocated": True}
        assert observe(rt, op) == before
    if memory == "inplace":
        assert "new worker" not in rt.stderr()  # REWIND_DEBUG is off


@pytest.mark.parametrize("op", ["timerslack", "seccomp", "nice", "wipeonfork"])
def test_inplace_says_why_it_replaced_a_worker_only_in_the_debug_log(serve, op):
    rt = start(serve, "inplace", "state_attacks", debug=True)
    before = observe(rt, op)
    rt.run({"op": op, "do": "set", "secret": secret()})
    assert observe(rt, op) == before
    if op == "seccomp":
        assert "starting a new worker: the request changed the worker's Seccomp" in rt.stderr()


def test_a_seccomp_filter_that_makes_the_rewinders_calls_lie_does_not_keep_a_secret(serve, memory):
    rt = start(serve, memory, "state_seccomp_lies")
    s = secret()
    planted = rt.run({"do": "plant", "secret": s}).json()
    assert planted["filter"] == 0
    peek = rt.run({"do": "peek", "fd": planted["fd"]}).json()
    leaked = s in peek["found"]
    assert leaked == (memory == "none"), peek
    if memory != "none":
        assert peek["umask"] == 0o022 and peek["usr2_default"], peek
        assert "new worker" not in rt.stderr()
