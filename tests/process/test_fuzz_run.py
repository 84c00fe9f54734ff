"""Fuzzing /run: generated bodies (random JSON, deep nesting, huge numbers, invalid UTF-8,
context values of every type) each get a well-formed HTTP answer in time, and a normal
request right after each one is served from a clean state.

CI runs REWIND_FUZZ_EXAMPLES bodies per backend (default 250, about a minute for both);
`make fuzz` runs 10,000 per backend.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("REWIND_FUZZ_EXAMPLES", "250"))
ANSWER_WITHIN_S = 30.0

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
context_values = st.one_of(
    scalars,
    st.sampled_from(["123", "NaN", "-Infinity", "1e999999", "", "9" * 400, "abc"]),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


def _encode(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, object] = {}
    if draw(st.booleans()):
        body["value"] = draw(json_values)
    keys = ["deadline", "api_key", "namespace", "activation_id", "action_name", "x"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        body[key] = draw(context_values)
    return _encode(body)


@st.composite
def nested_bodies(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=100, max_value=9000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" + closer * depth
    return (
        b'{"value": {"x": '
        + inner
        + b'}, "deadline": "'
        + draw(st.sampled_from([b"0", b"NaN", b"123", b"9e15"]))
        + b'"}'
    )


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    good = draw(json_bodies())
    how = draw(st.sampled_from(["truncate", "garbage", "invalid-utf8", "number", "nan"]))
    if how == "truncate":
        return good[: draw(st.integers(min_value=0, max_value=max(0, len(good) - 1)))]
    if how == "garbage":
        return draw(st.binary(max_size=200))
    if how == "invalid-utf8":
        return b'{"value": {"s": "' + draw(st.binary(min_size=1, max_size=20)) + b'"}}'
    if how == "number":
        digits = draw(st.integers(min_value=1, max_value=5000))
        return b'{"value": {"n": ' + b"9" * digits + b'}, "deadline": "' + b"9" * digits + b'"}'
    return b'{"value": {"n": NaN}, "deadline": -Infinity}'


bodies = st.one_of(json_bodies(), nested_bodies(), raw_bodies())


@pytest.mark.parametrize("memory", ["fork", "inplace"])
def test_every_generated_run_body_costs_at_most_its_own_request(serve, memory):
    rt = serve(memory=memory)
    assert rt.init("fuzz_target").status == 200
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies)
    def one(body: bytes) -> None:
        began = time.monotonic()
        resp = rt.client.post("/run", body)
        assert time.monotonic() - began < ANSWER_WITHIN_S
        assert resp.status in (200, 400, 413, 502), (resp.status, resp.body[:300], body[:300])
        json.loads(resp.body)  # always a JSON answer
        after = rt.run({"probe": 1})
        assert after.status == 200, (after.body, body[:300])
        assert after.json() == {"count": 1, "echo": {"probe": 1}}, body[:300]
        seen.append(resp.status)

    one()
    assert len(seen) >= min(EXAMPLES, 100)
