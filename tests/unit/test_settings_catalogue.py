"""The settings catalogue (rewind.settings) against every other copy of the settings.

The Go proxy's config.go (names, defaults, allowed values, the boolean rule), the image's
ENV block, docs/ENVVARS.md, and the Python readers (launcher, sidecar, file drivers, the
``rewind`` command) must all agree with the catalogue.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rewind import cli, debug, settings
from rewind.files.docker import DockerConfig
from rewind.files.local import LocalConfig
from rewind.launcher.config import LauncherConfig
from rewind.memory import identity
from rewind.settings import CATALOGUE
from rewind.sidecar.server import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG_GO = (ROOT / "proxy/actionloop/config.go").read_text()
DOCKERFILE = (ROOT / "core/python3Action/Dockerfile").read_text()
ENVVARS = (ROOT / "docs/ENVVARS.md").read_text()
_STR = r'"((?:[^"\\]|\\.)*)"'


def _go_constants() -> dict[str, str]:
    """Every ``Name = value`` constant of config.go, rendered as its environment text."""
    out: dict[str, str] = {}
    for name, expr in re.findall(r"^\s*(?:const )?(\w+)\s*=\s*(.+?)\s*$", CONFIG_GO, re.M):
        if m := re.fullmatch(_STR, expr):
            out[name] = m.group(1)
        elif m := re.fullmatch(r"(\d+) << (\d+)", expr):
            out[name] = str(int(m.group(1)) << int(m.group(2)))
        elif m := re.fullmatch(r"(\d+) \* time\.Second", expr):
            out[name] = f"{m.group(1)}s"
    return out


CONSTS = _go_constants()


def _go_value(token: str) -> str:
    token = token.strip()
    return m.group(1) if (m := re.fullmatch(_STR, token)) else CONSTS[token]


def _go_reads() -> dict[str, dict[str, object]]:
    """What config.go reads: name → {"default", "choices", "kind"} where it says."""
    reads: dict[str, dict[str, object]] = {}
    for key in re.findall(r'env\[("[A-Z_]+"|\w+)\]', CONFIG_GO):
        if key.startswith('"') or key in CONSTS:  # not a loop's or a helper's variable
            reads.setdefault(_go_value(key), {})
    for key, default in re.findall(r'get\(("[A-Z_]+"), (\w+)\)', CONFIG_GO):
        reads.setdefault(_go_value(key), {})["default"] = _go_value(default)
    for key, default in re.findall(r'positiveBytes\(env, ("[A-Z_]+"), (\w+)\)', CONFIG_GO):
        reads.setdefault(_go_value(key), {})["default"] = _go_value(default)
    for args in re.findall(r"oneOf\(env, ([^)]*)\)", CONFIG_GO, re.S):
        key, default, *choices = [a for a in re.split(r",\s*", args) if a.strip()]
        reads.setdefault(_go_value(key), {}).update(
            default=_go_value(default), choices=tuple(_go_value(c) for c in choices)
        )
    # "cfg.Field = DefaultX" where the struct's doc comment says "Field is NAME".
    fields = dict(re.findall(r"// (\w+) is ([A-Z_]+)", CONFIG_GO))
    for field, const in re.findall(r"cfg\.(\w+) = (Default\w+)\n", CONFIG_GO):
        reads.setdefault(fields[field], {})["default"] = CONSTS[const]
    for key in re.findall(r'debugOn\(env\["([A-Z_]+)"\]\)', CONFIG_GO):
        reads[key]["kind"] = "bool"
    for key in re.findall(r'env\["([A-Z_]+)"\] != ""', CONFIG_GO):
        reads[key]["kind"] = "set"
    reads.pop("PATH")  # passed on, not a setting
    return reads


GO_READS = _go_reads()


def test_the_go_proxy_reads_exactly_the_proxy_settings_of_the_catalogue() -> None:
    proxy = {s.name for s in CATALOGUE.values() if s.role == "proxy"}
    assert set(GO_READS) == proxy


@pytest.mark.parametrize("name", sorted(GO_READS))
def test_go_default_choices_and_kind_agree_with_the_catalogue(name: str) -> None:
    setting, go = CATALOGUE[name], GO_READS[name]
    assert go.get("default", "") == setting.default
    assert go.get("choices", setting.choices) == setting.choices
    assert go.get("kind", setting.kind) == setting.kind


def test_go_parses_booleans_with_the_catalogues_false_values() -> None:
    body = re.search(r"func debugOn\(.*?\n}\n", CONFIG_GO, re.S)
    assert body is not None
    case = re.search(r"case (.*):", body.group(0))
    assert case is not None
    assert tuple(_go_value(v) for v in case.group(1).split(",")) == settings.FALSE_VALUES


def _image_env() -> dict[str, str]:
    """The runtime stage's ENV block: ``NAME=value`` pairs, quotes removed."""
    block = DOCKERFILE.rsplit("\nENV ", 1)[1].split("\n\n", 1)[0]
    pairs = re.findall(r'([A-Z_]+)=("[^"]*"|\S*)', block)
    return {k: v.strip('"') for k, v in pairs}


def test_every_runtime_setting_of_the_image_is_catalogued_with_its_image_default() -> None:
    image = {k: v for k, v in _image_env().items() if k.startswith(("REWIND_", "OW_"))}
    assert image, "no ENV block found"
    for name, value in image.items():
        assert name in CATALOGUE, f"{name} is in the Dockerfile but not in rewind.settings"
        assert value == CATALOGUE[name].image_default, name


def test_image_overrides_in_the_catalogue_are_set_by_the_image() -> None:
    image = _image_env()
    for s in CATALOGUE.values():
        if s.image is not None:
            assert image.get(s.name) == s.image, s.name


def _doc_rows() -> dict[str, list[list[str]]]:
    """docs/ENVVARS.md's table rows by every variable named in their first cell."""
    rows: dict[str, list[list[str]]] = {}
    for line in ENVVARS.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for name in re.findall(r"`((?:__)?[A-Z][A-Z_]+)`", cells[0]):
            rows.setdefault(name, []).append(cells)
    return rows


def _documented(value: str, cell: str, setting: settings.Setting) -> bool:
    if value:
        return f"`{value}`" in cell or (setting.kind == "path" and value in cell)
    return cell.startswith(("empty", "unset", "set by the proxy"))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_setting_is_documented_with_its_defaults(name: str) -> None:
    setting = CATALOGUE[name]
    rows = _doc_rows().get(name)
    assert rows, f"{name} has no row in docs/ENVVARS.md"
    cells = rows[0]  # the first row gives the defaults; the allowed values may be in any
    if setting.by_proxy:
        assert cells[1] == "set by the proxy", cells
    if len(cells) == 4:  # the proxy's table: variable | image | local | meaning
        assert _documented(setting.image_default, cells[1], setting), cells
        assert _documented(setting.default, cells[2], setting) or cells[2] == "same", cells
    else:
        assert _documented(setting.default, cells[1], setting), cells
    for choice in setting.choices:
        assert not choice or f"`{choice}`" in str(rows), (name, choice)


@pytest.mark.parametrize("value", ["", " ", "0", "false", "FALSE", "no", "Off", " off "])
def test_every_python_reader_parses_an_off_boolean_as_off(value: str) -> None:
    env = {"REWIND_DEBUG": value, "OW_DEBUG": value}
    assert not settings.parse_bool(value) and not debug.flag_on(value)
    assert not debug.debug_enabled(env)
    assert not LauncherConfig.from_env(env).debug
    assert not ServerConfig.from_env(env).debug


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "anything"])
def test_every_python_reader_parses_an_on_boolean_as_on(value: str) -> None:
    for var in settings.DEBUG_VARS:
        assert LauncherConfig.from_env({var: value}).debug
        assert ServerConfig.from_env({var: value}).debug


def test_the_python_readers_take_defaults_and_choices_from_the_catalogue() -> None:
    cfg = LauncherConfig.from_env({})
    assert (cfg.memory, cfg.checkpoint, cfg.files, cfg.sidecar) == (
        settings.MEMORY.default,
        settings.CHECKPOINT.default,
        settings.FILES.default,
        settings.SIDECAR.default,
    )
    assert ServerConfig.from_env({}).listen == settings.SIDECAR.default
    local = LocalConfig.from_env({}, paths="/tmp")
    assert local.snapshot_dir == settings.SNAPSHOT_DIR.default
    docker = DockerConfig.from_env({})
    assert docker.snapshot_dir == settings.HOST_SNAPSHOT_DIR.default
    assert str(docker.max_bytes) == settings.HOST_MAX_BYTES.default
    assert settings.FUNCTION_IDS.name == identity.ENV


@pytest.mark.parametrize(
    ("option", "setting"),
    [
        ("--memory", settings.MEMORY),
        ("--files", settings.FILES),
        ("--checkpoint", settings.CHECKPOINT),
    ],
)
def test_the_rewind_commands_choices_come_from_the_catalogue(
    option: str, setting: settings.Setting, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    dest = option.lstrip("-")
    for choice in setting.choices:
        if (option, choice) == ("--files", "docker"):
            continue  # a host sidecar, which rewind serve does not run
        assert getattr(parser.parse_args(["serve", option, choice]), dest) == choice
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", option, "not-a-choice"])
    assert ", ".join(repr(c) for c in setting.choices if c != "docker") in capsys.readouterr().err


def test_what_an_action_may_set_in_go_is_catalogued_with_allowed_values() -> None:
    policy = (ROOT / "proxy/actionloop/settings_policy.go").read_text()
    block = policy.split("var actionSettings", 1)[1].split("\n}\n", 1)[0]
    entries = re.findall(r'"([A-Z_]+)":\s*(nil|\{[^}]*\})', block)
    assert entries
    for name, values in entries:
        assert name in CATALOGUE, name
        for value in re.findall(_STR, values):
            assert value in CATALOGUE[name].choices, (name, value)
