"""Who may weaken isolation: only the operator (the container's environment). An action's
author can neither set weaker settings in /init's env nor replace the runtime's code at
import (docs/SECURITY.md, "Trust")."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REWIND_MEMORY", "none"),
        ("REWIND_FILES", "off"),
        ("REWIND_CHECKPOINT", "first-request"),
        ("REWIND_DEBUG", "1"),
        ("REWIND_USER", "root"),
    ],
)
def test_an_actions_env_cannot_weaken_isolation(serve, key, value):
    rt = serve(memory="fork")
    resp = rt.init("leaks_global_state", env={key: value})
    assert resp.status == 400, resp.body
    assert key in resp.json()["error"]
    # Nothing of the refused init is kept: a clean init works.
    assert rt.init("leaks_global_state").status == 200


def test_an_actions_env_may_choose_among_secure_settings(serve):
    rt = serve(memory="auto")
    resp = rt.init("leaks_global_state", env={"REWIND_MEMORY": "fork", "OTHER": "x"})
    assert resp.status == 200, resp.body
    assert rt.client.status()["memory"] == "fork"


def test_the_operator_may_hand_every_setting_to_the_action(serve):
    rt = serve(memory="fork", env={"REWIND_ALLOW_ACTION_SETTINGS": "1"})
    assert rt.init("leaks_global_state", env={"REWIND_MEMORY": "none"}).status == 200
    assert rt.client.status()["memory"] == "none"


@pytest.mark.parametrize("memory", ["fork", "inplace", "auto"])
def test_replacing_the_runtimes_code_at_import_fails_init(serve, memory):
    rt = serve(memory=memory)
    resp = rt.init("patches_runtime")
    assert resp.status == 502, resp.body
    assert "replaced the runtime's own rewind.launcher.backend.choose" in rt.stderr()
