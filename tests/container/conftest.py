"""Fixtures of the container tests: the runtime image, built once per session, and an
invoker emulator that removes its containers after each test.

The image comes from ``scripts/build-image.sh`` (the build ``distDocker`` runs, which
also starts the Docker engine) unless ``REWIND_IMAGE`` names an existing image. These
tests never skip for want of Docker: CI starts the engine, so its absence is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewind_tools.invoker import Invoker

ROOT = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def image_exists(image: str) -> bool:
    """True when the Docker engine has ``image``."""
    proc = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True, check=False)
    return proc.returncode == 0


def run_script(name: str, timeout_s: float = 1200) -> str:
    """Run ``scripts/<name>`` and return its stdout; a failure fails the test."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / name)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def runtime_image() -> str:
    """The runtime image under test: ``$REWIND_IMAGE`` or a fresh local build."""
    named = os.environ.get("REWIND_IMAGE", "").strip()
    if named:
        run_script("docker-engine.sh")
        if not image_exists(named):
            pytest.fail(f"REWIND_IMAGE={named} does not exist in the Docker engine")
        return named
    return run_script("build-image.sh").splitlines()[-1]


@pytest.fixture
def invoker(runtime_image: str) -> Iterator[Invoker]:
    """An invoker emulator for the image; its containers are removed after the test."""
    inv = Invoker(runtime_image, memory_mb=256)
    try:
        yield inv
    finally:
        inv.close()


@pytest.fixture(scope="session")
def offline_build_args() -> str:
    """``-PdockerBuildArgs`` for an offline build here: the base-image stand-ins and the
    wheelhouse (both cached by their scripts)."""
    python_image, go_image = run_script("base-images.sh").splitlines()[:2]
    wheelhouse = run_script("wheelhouse.sh")
    return f"PYTHON_IMAGE={python_image} GO_IMAGE={go_image} WHEELHOUSE={wheelhouse}"
