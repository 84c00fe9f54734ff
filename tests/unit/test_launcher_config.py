"""LauncherConfig.from_env: every REWIND_* value is validated with a clear error."""

import pytest

from rewind.launcher.config import LauncherConfig
from rewind.request.errors import ConfigError


def test_defaults_are_auto_init_and_files_off():
    cfg = LauncherConfig.from_env({})
    assert (cfg.memory, cfg.checkpoint, cfg.files, cfg.warmup) == ("auto", "init", "off", None)
    assert cfg.wait_for_ack is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REWIND_MEMORY": "forks"}, "REWIND_MEMORY='forks' is not one of"),
        ({"REWIND_CHECKPOINT": "later"}, "REWIND_CHECKPOINT='later'"),
        ({"REWIND_FILES": "yes"}, "REWIND_FILES='yes'"),
        ({"REWIND_CHECKPOINT": "warmup"}, "needs REWIND_WARMUP"),
        ({"REWIND_CHECKPOINT": "warmup", "REWIND_WARMUP": "{oops"}, "not valid JSON"),
        ({"REWIND_CHECKPOINT": "warmup", "REWIND_WARMUP": "3"}, "object or array"),
        ({"REWIND_FILES": "local", "REWIND_SIDECAR": "/run/x.sock"}, "unix:, tcp: or fd:"),
        ({"REWIND_KERNEL": "maybe"}, "REWIND_KERNEL"),
    ],
)
def test_bad_settings_are_rejected_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        LauncherConfig.from_env(env)


def test_warmup_payload_is_parsed_and_ack_flag_read():
    cfg = LauncherConfig.from_env(
        {
            "REWIND_CHECKPOINT": "warmup",
            "REWIND_WARMUP": '{"warmup": true}',
            "__OW_WAIT_FOR_ACK": "1",
            "REWIND_MEMORY": " fork ",
        }
    )
    assert cfg.warmup == {"warmup": True}
    assert cfg.wait_for_ack is True
    assert cfg.memory == "fork"
