"""The audit collects through Slurm, and a Slurm tier run loads the project's marker catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runners.registry import RunnerFactory, instance_of
from runners.slurm_support import slurm_available
from scheduler.config import config_from_mapping
from scheduler.kernel.outcome import Outcome
from scheduler.markers.collect import collect
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store.engine import Store
from tests.conftest import require, tier
from tests.scheduler.markers import reference

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TESTS = """\
import pytest

@pytest.mark.hourly
def test_kept():
    pass

@pytest.mark.hourly
def test_demoted():
    pass

def test_promoted():
    pass

def test_unmarked():
    pass
"""
CATALOG = """\
version = 1

[[entry]]
match = "tests/test_s.py::test_promoted"
markers = ["hourly"]

[[entry]]
match = "tests/test_s.py::test_demoted"
markers = []
unmark = ["hourly"]
"""


def test_slurm_collection_and_hourly_run_follow_the_catalog(tmp_path: Path) -> None:
    ok, reason = slurm_available()
    require(ok, f"Slurm cluster not available: {reason}")
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_s.py").write_text(TESTS)
    (project / "tests" / "schedctl-markers.toml").write_text(CATALOG)
    (project / "tests" / "schedctl_catalog.py").write_text(
        (Path(__file__).parents[3] / "runners" / "catalog_plugin.py").read_text()
    )
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    hourly: every hour\n")
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "runner": "slurm",
        "slurm": {"shared_dir": str(tmp_path / "slurm-runs")},
        "project": {"path": str(project)},
        "tiers": {"hourly": tier(schedule=None, markers="hourly", memory="256m", timeout=120)},
        "daemon": {"metrics_address": None, "web_address": None, "grace": 2},
    }
    config = config_from_mapping(data, source=str(tmp_path / "config.yaml"))
    factory = RunnerFactory(instance=instance_of(config.state_dir))
    found = collect(config, "hourly", runners=factory)
    assert found.runner == "slurm"
    assert found.items["tests/test_s.py::test_promoted"] == {"hourly"}
    assert found.items["tests/test_s.py::test_demoted"] == frozenset()
    record = Dispatcher(config, Store(config.db_path), factory).run(RunRequest("hourly"))
    assert record.outcome is Outcome.PASSED, record.reason
    ran = {t.nodeid for t in Store(config.db_path).test_results_for(record.id)}
    expected = {"tests/test_s.py::test_kept", "tests/test_s.py::test_promoted"}
    assert (
        ran == expected == reference.collect_ids(project, "-p", "schedctl_catalog", "-m", "hourly")
    )
