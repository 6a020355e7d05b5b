"""The weekly torchrun tier in containers on CPU: gloo ranks inside the hardened test image.

The test image has no torch; the tier mounts the host venv's site-packages read-only at
/opt/site and puts it on PYTHONPATH (the docker runner rewrites the host path), so the image's
Debian python 3.11 imports the same CPU build of torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from runners.docker import CONTAINER_UID as DEFAULT_CONTAINER_UID
from tests.conftest import require
from tests.schedctl import run_json

pytest.register_assert_rewrite("tests.runners.conftest_docker")
from tests.runners.conftest_docker import state_containers  # noqa: E402

pytest_plugins = ["tests.runners.conftest_docker"]
pytestmark = [pytest.mark.docker, pytest.mark.torch, pytest.mark.slow]
IMAGE = "schedctl-test:bookworm"
SITE_IN_CONTAINER = "/opt/site"
CONTAINER_UID = DEFAULT_CONTAINER_UID  # the docker runner's default user


@pytest.fixture(scope="module")
def site_packages(docker_image: str) -> Path:
    """The directory holding the host's torch (it must be cp311, like the image's python)."""
    try:
        import torch
    except ImportError:
        require(False, "torch is not installed (make test installs torch==2.13.0)")
    return Path(torch.__file__).resolve().parents[1]


def weekly(site: Path, *, mount_torch: bool = True, **torchrun: Any) -> dict[str, Any]:
    tier: dict[str, Any] = {
        "schedule": "0 3 * * 0",
        "kind": "torchrun",
        "timeout": 240,
        "runner": "docker",
        "torchrun": {"nproc": [1, "all"], "cpu_procs": 2, "steps": 8, **torchrun},
    }
    if mount_torch:
        tier["mounts"] = {str(site): SITE_IN_CONTAINER}
        tier["env"] = {"PYTHONPATH": str(site)}
    return tier


def run_weekly(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    return run_json(config, "weekly", *extra, timeout=300)


def test_weekly_passes_in_containers(
    write_config: Callable[..., Path],
    tmp_path: Path,
    site_packages: Path,
    docker_client: docker.DockerClient,
) -> None:
    """Both gloo runs pass in containers, verdict passed, numbers and containers recorded."""
    config = write_config(project=tmp_path, image=IMAGE, tiers={"weekly": weekly(site_packages)})
    code, result = run_weekly(config)
    assert (code, result["outcome"]) == (0, "passed"), result["reason"]
    assert result["runner"] == "docker"
    rows = {row["world_size"]: row for row in result["details"]["comparison"]["table"]}
    assert set(rows) == {1, 2}
    assert rows[1]["samples_per_s"] > 0 and rows[2]["efficiency"] > 0
    runs = result["details"]["smoketest"]["runs"]
    assert {(runs[n]["summary"]["backend"], runs[n]["summary"]["device"]) for n in runs} == {
        ("gloo", "cpu")
    }
    provenance = result["details"]["provenance"]
    assert provenance["runner"] == "docker" and provenance["image"] == IMAGE
    assert provenance["image_id"].startswith("sha256:")
    containers = provenance["containers"]
    assert set(containers) == {"1", "2"} and len(set(containers.values())) == 2
    assert provenance["container_id"] == containers["2"]
    for n in ("1", "2"):  # rank 0 wrote its metrics as the container's user, not as us
        metrics = Path(runs[n]["log_path"]).with_name("metrics.jsonl")
        assert metrics.stat().st_uid == CONTAINER_UID
    assert state_containers(docker_client, tmp_path / "state") == []


HANG_LIMIT_S = 45


def test_injected_hang_times_out_with_container_stacks(
    write_config: Callable[..., Path],
    tmp_path: Path,
    site_packages: Path,
    docker_client: docker.DockerClient,
) -> None:
    """A rank that hangs: timeout within the per-run limit, every rank's stack, no container."""
    # The limit must leave a loaded 2-core machine time to import torch and reach step 2 in
    # both ranks: the stacks are only evidence of the hang once rank 1 is in it.
    tier = weekly(site_packages, nproc=[2], inject_fault="hang", run_timeout=HANG_LIMIT_S)
    del tier["runner"]  # chosen by the CLI override instead
    config = write_config(project=tmp_path, image=IMAGE, tiers={"weekly": tier})
    code, result = run_weekly(config, "--runner", "docker")
    assert (code, result["outcome"]) == (1, "timeout"), result["reason"]
    assert "Python stacks captured" in result["reason"]
    run = result["details"]["smoketest"]["runs"]["2"]
    assert run["duration_s"] < HANG_LIMIT_S + 15
    hung, waiting = run["stacks"].split("--- rank 1")[1], run["stacks"].split("--- rank 1")[0]
    assert "in _hang" in hung and "schedctl_smoketest.py" in hung
    assert "--- rank 0" in waiting and "most recent call first" in waiting
    assert "injected hang at step 2" in "\n".join(run["rank_logs"]["1"])
    assert state_containers(docker_client, tmp_path / "state") == []


def test_image_without_torch_is_infra(
    write_config: Callable[..., Path],
    tmp_path: Path,
    site_packages: Path,
    docker_client: docker.DockerClient,
) -> None:
    """Without torch in the container the tier is infra-error naming the image, not failed."""
    tier = weekly(site_packages, mount_torch=False, nproc=[1])
    config = write_config(project=tmp_path, image=IMAGE, tiers={"weekly": tier})
    code, result = run_weekly(config)
    assert (code, result["outcome"]) == (1, "infra-error")
    assert "torch is not importable" in result["reason"] and IMAGE in result["reason"]
    assert state_containers(docker_client, tmp_path / "state") == []
