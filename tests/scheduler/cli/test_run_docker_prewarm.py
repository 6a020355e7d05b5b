"""`schedctl run --runner docker` creates and starts its container while it prepares the run
(runners/docker_prewarm.py): through the real CLI process, on the real engine."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from runners.docker_prewarm import STAGING_PREFIX
from runners.registry import instance_of
from tests.conftest import SCHEDCTL
from tests.runners.test_contract import _docker_harness
from tests.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = "schedctl-test:bookworm"


@pytest.fixture(autouse=True)
def _engine() -> None:
    _docker_harness().runner.close()  # requires the engine and the image (fails under CI=true)


def run_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "run", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def containers(state_dir: Path) -> list[Any]:
    client = docker.from_env()
    try:
        label = f"schedctl.instance={instance_of(state_dir)}"
        return list(client.containers.list(all=True, filters={"label": label}))
    finally:
        client.close()


def staging_dirs(state_dir: Path) -> list[str]:
    runs = state_dir / "runs"
    return [e for e in os.listdir(runs) if e.startswith(STAGING_PREFIX)] if runs.exists() else []


def test_a_docker_run_uses_its_prewarmed_container(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The same counts as a local run, in a prewarmed container; nothing left behind."""
    state = tmp_path / "state"
    config = write_config(image=IMAGE)
    runs = [run_json(config, "hourly", "--runner", "docker") for _ in range(2)]
    code, local = run_json(config, "hourly", "--runner", "local")
    assert code == 0
    for code, run in runs:
        assert code == 0, run
        assert run["details"]["provenance"]["prewarmed"] is True
        assert run["details"]["provenance"]["container_name"].endswith(f"-{run['run_id']}")
        assert run["counts"] == local["counts"]
        assert (state / "runs" / str(run["run_id"]) / "junit.xml").is_file()
    assert containers(state) == []
    assert staging_dirs(state) == []


def test_schedctl_killed_mid_prewarm(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """SIGKILL of schedctl before "go" (held at the store's write lock): its container reads EOF
    and exits 0 having run nothing; the next run removes it and its staging dir."""
    state = tmp_path / "state"
    config = write_config(image=IMAGE)
    code, first = run_json(config, "hourly", "--runner", "docker")  # remembers the plan
    assert code == 0, first
    lock = sqlite3.connect(state / "schedctl.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    proc = subprocess.Popen(
        [*SCHEDCTL, "--config", str(config), "run", "hourly", "--runner", "docker", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def prewarmed() -> Any:
            for found in containers(state):
                pending = found.labels.get("schedctl.run-id", "")
                if pending.startswith(f"launch-{proc.pid}-") and found.status == "running":
                    return found
            return None

        container = wait_for(prewarmed, 120, "schedctl's prewarmed container to run")
        assert len(staging_dirs(state)) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lock.execute("ROLLBACK")
        lock.close()

    def exited() -> bool:
        container.reload()
        return container.status == "exited"

    wait_for(exited, 60, "the orphaned launcher to read EOF and exit")
    assert container.attrs["State"]["ExitCode"] == 0
    assert container.logs() == b""  # no pytest, no project code: nothing printed
    code, after = run_json(config, "hourly", "--runner", "docker")
    assert code == 0, after
    assert after["details"]["provenance"]["prewarmed"] is True
    assert containers(state) == []
    assert staging_dirs(state) == []
