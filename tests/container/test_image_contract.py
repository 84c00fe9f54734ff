"""The runtime image against the OpenWhisk action-container contract, in real containers.

Each test drives containers of the image through the invoker emulator, the way
OpenWhisk's invoker does (docs: /work/shared/openwhisk-contract.md §3-§6, §9), and
checks one promise: init and run, the log sentinels, refused re-init, the result
checks, zip actions, the gradle build, that the function user cannot write the
image's own files, and that the image carries the runtime without the development tools.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from rewind_tools.invoker import SENTINEL, ActionSpec, Invoker

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "tests" / "actions"
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def action(name: str, main: str = "main") -> ActionSpec:
    """tests/actions/<name>/main.py as a source action."""
    return ActionSpec(code=(ACTIONS / name / "main.py").read_text(), main=main, name=name)


def zip_action(name: str, main: str = "main") -> ActionSpec:
    """tests/actions/<name>/ zipped, files at the archive's root, as a binary action."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((ACTIONS / name).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(ACTIONS / name).as_posix())
    return ActionSpec(code=buf.getvalue(), main=main, binary=True, name=name)


def test_hello_action_initialises_and_runs(invoker: Invoker) -> None:
    activation = invoker.invoke(action("hello"), {"name": "World"}, timeout_s=30)

    assert activation.status == 200, activation
    assert activation.result == {"greeting": "Hello World!"}
    assert activation.stdout.strip() == "hello World"
    assert activation.logs_complete


def test_warm_container_serves_the_next_activation_of_the_same_action(invoker: Invoker) -> None:
    first = invoker.invoke(action("hello"), {"name": "a"}, timeout_s=30)
    second = invoker.invoke(action("hello"), {"name": "b"}, timeout_s=30)

    assert (first.cold, second.cold) == (True, False)
    assert second.container == first.container
    assert second.result == {"greeting": "Hello b!"}
    assert second.stdout.strip() == "hello b"


def test_every_run_ends_with_one_sentinel_on_stdout_and_one_on_stderr(invoker: Invoker) -> None:
    container = invoker.create("echo")
    assert container.init(action("echo").init_value(), timeout_s=60).status == 200
    for i in range(2):
        reply = container.post("/run", {"value": {"i": i}}, timeout_s=30)
        assert reply.status == 200, reply

    stdout, stderr = container.logs()
    assert stdout.count(SENTINEL + "\n") == 2
    assert stderr.count(SENTINEL + "\n") == 2
    assert stdout.replace(SENTINEL + "\n", "") == "stdout line\n" * 2
    assert "stderr line\n" in stderr


def test_second_init_is_refused_with_403(invoker: Invoker) -> None:
    container = invoker.create("hello")
    assert container.init(action("hello").init_value(), timeout_s=60).status == 200

    again = container.init(action("hello").init_value(), timeout_s=10)

    assert again.status == 403
    assert again.json() == {"error": "Cannot initialize the action more than once."}
    assert SENTINEL not in "".join(container.logs())


def test_non_dict_result_is_502_and_destroys_the_container(invoker: Invoker) -> None:
    activation = invoker.invoke(action("returns_non_dict"), {}, timeout_s=30)

    assert activation.status == 502
    assert activation.result == {"error": "The action did not return a dictionary or array."}
    assert activation.developer_error
    assert invoker.containers == []


def test_raising_action_answers_200_with_error_and_traceback_on_stderr(invoker: Invoker) -> None:
    activation = invoker.invoke(action("raises"), {}, timeout_s=30)

    assert activation.status == 200, activation
    assert activation.application_error
    assert "nope" in activation.result["error"]
    assert "Traceback" in activation.stderr
    assert [c.name for c in invoker.containers] == [activation.container]


def test_zip_action_with_main_module_and_helper_runs(invoker: Invoker) -> None:
    activation = invoker.invoke(zip_action("zip_with_helper", main="niam"), {"name": "z"}, 30)

    assert activation.status == 200, activation
    assert activation.result == {"greeting": "Hello from a zip, z!"}


def test_activation_context_reaches_the_action(invoker: Invoker) -> None:
    spec = action("echo")
    activation = invoker.invoke(spec, {"k": "v"}, timeout_s=30)

    assert activation.status == 200, activation
    env = activation.result["env"]
    assert activation.result["args"] == {"k": "v"}
    assert env["__OW_API_HOST"] == invoker.api_host
    assert env["__OW_ACTION_NAME"] == spec.qualified_name
    assert env["__OW_ACTIVATION_ID"] == activation.activation_id
    assert env["__OW_DEADLINE"].isdigit()


def test_action_exceeding_its_time_limit_loses_its_container(runtime_image: str) -> None:
    # The invoker's own time limit. With a rewinding backend the runtime stops the
    # request at its deadline first and keeps the container (tested in
    # test_image_isolation.py); `none` does not, so the emulator's limit is what fires.
    inv = Invoker(runtime_image, memory_mb=256, env={"REWIND_MEMORY": "none"})
    try:
        activation = inv.invoke(action("sleeps_forever"), {"sleep": 3600}, timeout_s=3)

        assert activation.timed_out
        assert "exceeded its time limits" in activation.result["error"]
        assert inv.containers == []
    finally:
        inv.close()


def test_function_user_cannot_write_site_packages_or_etc(invoker: Invoker) -> None:
    activation = invoker.invoke(action("writes_system_dirs"), {}, timeout_s=30)

    assert activation.status == 200, activation
    result = activation.result
    assert result["uid"] != 0
    assert result["protected"]["/etc"] == "denied"
    assert "written" not in result["protected"].values(), result["protected"]
    assert result["tmp"] == "written"


def _python_in_image(image: str, code: str) -> subprocess.CompletedProcess[str]:
    cmd = [DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c"]
    return subprocess.run([*cmd, code], capture_output=True, text=True, timeout=120)


def test_image_carries_the_runtime_but_not_the_development_tools(runtime_image: str) -> None:
    runtime = _python_in_image(
        runtime_image, "import rewind.cli, rewind.launcher.main, rewind.sidecar.server"
    )
    assert runtime.returncode == 0, runtime.stderr
    for tool in ("rewind.bench", "rewind.invoker", "rewind_tools"):
        absent = _python_in_image(runtime_image, f"import {tool}")
        assert absent.returncode != 0, f"{tool} is in the image"
        assert "ModuleNotFoundError" in absent.stderr, absent.stderr


def test_gradle_distDocker_builds_and_tags_the_image(
    runtime_image: str, offline_build_args: str
) -> None:
    # Tests call gradle (Debian's 4.4.1 here); users call ./gradlew (gradle 8.5).
    gradle = shutil.which("gradle") or str(ROOT / "gradlew")
    prefix, tag = "rewind-test", f"t{uuid.uuid4().hex[:10]}"
    image = f"{prefix}/action-python-v3.11-rewind:{tag}"
    cmd = [
        gradle,
        "--offline",
        "--no-daemon",
        "--project-cache-dir",
        str(ROOT / "build" / "gradle"),
        f"-PdockerBinary={DOCKER}",
        f"-PdockerImagePrefix={prefix}",
        f"-PdockerImageTag={tag}",
        f"-PdockerBuildArgs={offline_build_args}",
        "distDocker",
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        inspect = [DOCKER, "image", "inspect", "--format", "{{.Id}}"]
        built = subprocess.run([*inspect, image], capture_output=True, text=True)
        assert built.returncode == 0, f"gradle distDocker did not tag {image}"
    finally:
        subprocess.run([DOCKER, "rmi", image], capture_output=True, check=False)
