"""The audit collects in the tier's image, and the catalog reaches container runs: docker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.store import Store
from tests.conftest import tier
from tests.schedctl import schedctl
from tests.scheduler.markers import reference

pytest_plugins = ["tests.runners.conftest_docker"]
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_image")]
IMAGE = "schedctl-test:bookworm"


def test_audit_and_hourly_run_in_docker_use_the_catalog(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    project = reference.write_project(tmp_path / "project")
    for path in [tmp_path, *project.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)
    config = write_config(
        project,
        image=IMAGE,
        runner="docker",
        tiers={"hourly": tier(markers="hourly"), "daily": tier(markers="daily")},
        markers={"hourly_budget": "60s"},
    )
    reference.record_history(Store(config.parent / "state" / "schedctl.db"))
    proc = schedctl(config, "markers", "audit", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["collected_by"] == {"tier": "hourly", "runner": "docker"}
    assert (data["distribution"]["marked"], data["distribution"]["total"]) == (29, 643)
    proc = schedctl(config, "markers", "apply", "--write", timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = schedctl(config, "run", "hourly", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    ran = {
        t.nodeid for t in Store(config.parent / "state" / "schedctl.db").test_results_for(run_id)
    }
    assert ran == reference.collect_ids(project, "-p", "schedctl_catalog", "-m", "hourly")
    assert len(ran) > 12 - 2  # recommendations were added (two hourly tests were demoted)
