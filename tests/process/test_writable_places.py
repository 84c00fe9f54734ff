"""Every place the function user can write is rewound (`rewind serve --files local`).

The action enumerates the places itself, at run time (tests/actions/writes_everywhere:
an os.walk of every read-write mount, independent of the runtime's own walk), writes a
marker into each, and the next request looks for them. Under `none` they are all still
there, which proves the test can fail; under every secure backend none is.
"""

from __future__ import annotations

import pytest

BACKENDS = ("none", "fork", "inplace", "fresh")
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_marker_in_any_writable_place_survives_the_request(serve, backend):
    if backend == "none":
        rt = serve(memory="none", files="off", private=True)
    else:
        rt = serve(memory=backend, files="local")
    assert rt.init("writes_everywhere").status == 200, rt.stderr()
    try:
        marked = rt.run({"op": "mark", "secret": "s3cret-1"}).json()
        assert "places" in marked, (marked, rt.stderr())
        assert set(SCRATCH) <= set(marked["places"]), marked  # the walk is not vacuous
        found = rt.run({"op": "find", "secret": "s3cret-1"}).json()["places"]
        assert found == (marked["places"] if backend == "none" else []), found
    finally:
        rt.run({"op": "clean", "secret": "s3cret-1"})


def test_the_derived_set_is_in_the_debug_log(serve):
    rt = serve(memory="fork", files="local", env={"REWIND_DEBUG": "1"})
    assert rt.init("writes_everywhere").status == 200, rt.stderr()
    rt.rt.stop()
    line = next(x for x in rt.stderr().splitlines() if "rewind-sidecar: checkpoint" in x)
    writable = line.split("writable=")[1].split()[0].split(":")
    assert set(SCRATCH) <= set(writable), line
