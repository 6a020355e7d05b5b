"""A docker run's remembered plan that the validated config no longer makes: the container
started early from it is removed as soon as schedctl knows, not when the command ends."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from runners.docker_prewarm import DockerPlan
from scheduler.run.launch_plans import recall, remember
from tests.conftest import SCHEDCTL
from tests.schedctl import run_json
from tests.waiting import wait_for

pytest.register_assert_rewrite("tests.runners.conftest_docker")
from tests.runners.conftest_docker import state_containers  # noqa: E402

pytest_plugins = ["tests.runners.conftest_docker"]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_image")]
IMAGE = "schedctl-test:bookworm"
STALE = "schedctl.test-stale"


def test_a_stale_plans_container_goes_while_the_run_starts(
    write_config: Callable[..., Path], tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The remembered plan differs from the validated config's (here: one more label): while
    schedctl waits for the store (held at its write lock), the stale container is already
    gone and the run's own prewarmed container runs; the run then uses the latter."""
    state = tmp_path / "state"
    config = write_config(image=IMAGE)
    code, first = run_json(config, "hourly", "--runner", "docker")  # remembers the plan
    assert code == 0, first
    plan = recall(config, "hourly", "docker")
    assert isinstance(plan, DockerPlan)
    labels = {**plan.template["labels"], STALE: "yes"}
    stale = DockerPlan({**plan.template, "labels": labels}, plan.runs_dir, plan.socket_path)
    remember(config, "hourly", "docker", stale)
    since = int(time.time()) - 1
    lock = sqlite3.connect(state / "schedctl.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    proc = subprocess.Popen(
        [*SCHEDCTL, "--config", str(config), "run", "hourly", "--runner", "docker", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def only_the_runs_own() -> bool:
            mine = [
                c
                for c in state_containers(docker_client, state)
                if c.labels.get("schedctl.run-id", "").startswith(f"launch-{proc.pid}-")
            ]
            return [(c.labels.get(STALE), c.status) for c in mine] == [(None, "running")]

        wait_for(only_the_runs_own, 120, "the stale container gone, the run's own running")
        assert proc.poll() is None  # still held at the store: the command has not ended
        events = docker_client.events(
            since=since,
            until=int(time.time()) + 1,
            decode=True,
            filters={"type": "container", "label": f"{STALE}=yes"},
        )
        assert {"create", "destroy"} <= {e["Action"] for e in events}  # it was made, then removed
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        out, err = proc.communicate(timeout=180)
    # Removed only at the command's end, the stale container would leave the run's own alone
    # (the condition above) just once the store gave up waiting and the run failed.
    assert proc.returncode == 0, err
    run = json.loads(out)
    assert run["details"]["provenance"]["prewarmed"] is True
    assert state_containers(docker_client, state) == []
