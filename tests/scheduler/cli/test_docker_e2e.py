"""Docker runs end to end through the CLI: parity with local, provenance, orphans, infra errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.prewarm import instance_of
from tests.conftest import SCHEDCTL, tier
from tests.schedctl import run_json
from tests.waiting import wait_for

pytest_plugins = ["tests.runners.conftest_docker"]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_image")]
IMAGE = "schedctl-test:bookworm"


def test_hourly_in_docker_matches_local(write_config: Callable[..., Path]) -> None:
    """examples/suite hourly in a container gives the local runner's counts, with provenance."""
    config = write_config(image=IMAGE)
    code_local, local = run_json(config, "hourly", "--runner", "local")
    code_docker, docker = run_json(config, "hourly", "--runner", "docker")
    assert (code_local, code_docker) == (0, 0)
    assert docker["runner"] == "docker" and docker["outcome"] == "passed"
    assert docker["counts"] == local["counts"]
    shown = json.loads(
        subprocess.run(
            [*SCHEDCTL, "--config", str(config), "show", str(docker["run_id"]), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert shown["image"] == IMAGE
    assert shown["image_id"].startswith("sha256:")
    assert len(shown["container_id"]) == 64


def _our_containers(state_dir: Path, run_id: int) -> list[str]:
    """The run's containers: labelled with its id, or -- a container prewarmed before the run
    existed (runners/docker_prewarm.py) keeps its pending ``launch-`` id label -- named for it."""
    instance = instance_of(state_dir)
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--format",
            '{{.ID}} {{.Names}} {{.Label "schedctl.run-id"}}',
            "--filter",
            f"label=schedctl.instance={instance}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        cid, name, label = [*line.split(), "", "", ""][:3]
        pending = label.startswith("launch-") and name.endswith(f"-{run_id}")
        if label == str(run_id) or pending:
            found.append(cid)
    return found


def test_killed_cli_leaves_no_orphan(
    write_config: Callable[..., Path], fixture_project: Callable[[str], Path], tmp_path: Path
) -> None:
    """kill -9 of the CLI mid-run: the next run reaps the container, the run is interrupted."""
    config = write_config(
        project=fixture_project("hanging"),
        image=IMAGE,
        tiers={"hourly": tier(timeout=300), "quick": tier(args=["-k", "quick"])},
    )
    proc = subprocess.Popen(
        [*SCHEDCTL, "--config", str(config), "run", "hourly", "--runner", "docker", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: _our_containers(tmp_path / "state", 1), 60, "the run's container")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _our_containers(tmp_path / "state", 1), "the container should outlive the killed CLI"
    t0 = time.monotonic()
    code, result = run_json(config, "quick", "--runner", "docker")
    assert code == 0 and result["outcome"] == "passed"
    assert _our_containers(tmp_path / "state", 1) == []
    assert time.monotonic() - t0 < 30
    runs = json.loads(
        subprocess.run(
            [*SCHEDCTL, "--config", str(config), "runs", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    first = next(r for r in runs if r["id"] == 1)
    assert first["outcome"] == "interrupted"


def test_missing_image_is_infra_error(write_config: Callable[..., Path]) -> None:
    """A missing image -> infra-error naming the image; nothing is pulled."""
    config = write_config(image="schedctl-missing:nope")
    code, result = run_json(config, "hourly", "--runner", "docker")
    assert (code, result["outcome"]) == (1, "infra-error")
    assert "schedctl-missing:nope" in result["reason"]


def test_engine_down_is_infra_error(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """Docker engine down -> infra-error naming the socket."""
    config = write_config(image=IMAGE)
    socket = tmp_path / "no-docker.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
    code, result = run_json(config, "hourly", "--runner", "docker", env=env)
    assert (code, result["outcome"]) == (1, "infra-error")
    assert str(socket) in result["reason"]


def test_tier_mounts_reach_a_pytest_container(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A tier's read-only mount is visible to its tests, and not writable."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "answer.txt").write_text("42")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "test_data.py").write_text(
        "import pathlib, pytest\n\n"
        "def test_reads_mount():\n"
        "    assert pathlib.Path('/data/answer.txt').read_text() == '42'\n\n"
        "def test_mount_is_read_only():\n"
        "    with pytest.raises(OSError):\n"
        "        pathlib.Path('/data/new.txt').write_text('x')\n"
    )
    config = write_config(
        project=project,
        image=IMAGE,
        tiers={"hourly": tier(markers=None, mounts={str(data): "/data"})},
    )
    code, result = run_json(config, "hourly", "--runner", "docker")
    assert (code, result["outcome"], result["counts"]["passed"]) == (0, "passed", 2)
