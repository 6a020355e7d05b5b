"""Fixtures and helpers for the tests that need the Docker engine and the test image.

Test modules load it with ``pytest_plugins = ["tests.runners.conftest_docker"]``; a test that
only needs the engine and the image present (it drives ``schedctl`` as a user would) asks for
``docker_image``. A missing engine or image skips on a developer machine and fails under CI=true
(:func:`tests.conftest.require`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from runners.base import RunSpec
from runners.docker import DEFAULT_IMAGE, LABEL_INSTANCE, DockerRunner
from runners.prewarm import instance_of
from tests.conftest import require

PYTEST_ARGV = ("python3", "-m", "pytest", "-q", "-p", "no:cacheprovider")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A real SDK client talking to the local engine."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        require(False, f"Docker engine not available ({exc}); run scripts/ensure-docker.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_image(docker_client: docker.DockerClient) -> str:
    """The locally built test image (scripts/build-image.sh)."""
    try:
        docker_client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"image {DEFAULT_IMAGE} missing; run scripts/build-image.sh (make image)")
    return DEFAULT_IMAGE


def our_containers(client: docker.DockerClient, instance: str) -> list[Any]:
    """Every container (running or not) labelled with this test's runner instance."""
    # A container removed between the listing and its inspection is gone, not an error.
    label = f"{LABEL_INSTANCE}={instance}"
    return list(client.containers.list(all=True, filters={"label": label}, ignore_removed=True))


def state_containers(client: docker.DockerClient, state_dir: Path) -> list[Any]:
    """Every container of the schedctl whose state dir is ``state_dir`` (its instance label)."""
    return our_containers(client, instance_of(state_dir))


@pytest.fixture
def instance() -> str:
    """A runner instance tag unique to this test, so parallel sessions never reap each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def docker_runner(
    docker_client: docker.DockerClient, docker_image: str, instance: str
) -> Iterator[DockerRunner]:
    """A DockerRunner on the real engine; anything left with its label is removed afterwards."""
    yield DockerRunner(docker_client, default_image=docker_image, instance=instance)
    for container in our_containers(docker_client, instance):
        container.remove(force=True)


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write a tiny pytest project (file name -> source) and return its directory."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "src"
        root.mkdir(exist_ok=True)
        for name, text in files.items():
            (root / name).write_text(text)
        return root

    return make


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., RunSpec]:
    """Build a RunSpec for a project dir with a fresh run id and run dir under tmp_path."""

    def make(workdir: Path, *extra_argv: str, **overrides: Any) -> RunSpec:
        run_id = overrides.pop("run_id", uuid.uuid4().hex[:12])
        run_dir = tmp_path / "runs" / run_id
        run_dir.mkdir(parents=True)
        fields: dict[str, Any] = {
            "run_id": run_id,
            "tier": "hourly",
            "argv": [*PYTEST_ARGV, *extra_argv],
            "workdir": workdir,
            "run_dir": run_dir,
            "timeout_s": 60.0,
            "memory": "512m",
        }
        fields.update(overrides)
        return RunSpec(**fields)

    return make
