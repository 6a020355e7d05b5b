"""A quarantined failing test, run for real: the tier passes, nothing alerts, show says so."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.alerts.build import build_alerting
from scheduler.cli import cli
from scheduler.config import config_from_mapping
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store import QuarantineRow, Store
from tests.conftest import tier

FILES = {
    "tests/test_mixed.py": """
        def test_known_bad():
            assert False, "tracked in #42"

        def test_good():
            pass
    """,
    "CODEOWNERS": "tests/ @lab/qa\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_quarantined_failure_leaves_tier_passed_and_sends_no_alert(
    tmp_path: Path, project: Path, httpserver: HTTPServer
) -> None:
    """The failing test is recorded (with its owner) but the run passes and no alert is sent."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    data = {
        "state_dir": str(tmp_path / "state"),
        "runner": "local",
        "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
        "project": {"path": str(project)},
        "tiers": {"hourly": tier(markers=None)},
        "alerts": {"webhooks": [{"name": "lab", "url": httpserver.url_for("/hook")}]},
    }
    config = config_from_mapping(data, source=str(tmp_path / "config.yaml"), base_dir=tmp_path)
    (tmp_path / "config.yaml").write_text(json.dumps(data))
    store = Store(config.db_path)
    nodeid = "tests/test_mixed.py::test_known_bad"
    store.quarantine_add(
        QuarantineRow(nodeid, "tracked in #42", utcnow(), "@bob", utcnow() + timedelta(days=14))
    )
    alerting = build_alerting(config, store)
    assert alerting is not None
    dispatcher = Dispatcher(
        config, store, RunnerFactory({"local": LocalRunner()}), listeners=[alerting.recorder]
    )
    record = dispatcher.run(RunRequest("hourly"))
    assert record.outcome is Outcome.PASSED, record.reason
    assert "1 quarantined failing" in record.reason
    (bad,) = [t for t in store.test_results_for(record.id) if t.nodeid == nodeid]
    assert (bad.outcome, bad.owner) == ("failed", "@lab/qa")
    alerting.worker.run_once()
    assert store.outbox_due(utcnow() + timedelta(days=1)) == []
    assert httpserver.log == []

    shown = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "config.yaml"), "show", str(record.id), "--json"]
    )
    payload = json.loads(shown.output)
    assert [q["nodeid"] for q in payload["quarantine"]] == [nodeid]
    assert any(t["quarantined"] and t["nodeid"] == nodeid for t in payload["tests"])


def test_without_quarantine_the_same_failure_fails_the_tier(tmp_path: Path, project: Path) -> None:
    """Control: the same suite without the quarantine fails."""
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
            "project": {"path": str(project)},
            "tiers": {"hourly": tier(markers=None)},
        },
        source=str(tmp_path / "config.yaml"),
        base_dir=tmp_path,
    )
    dispatcher = Dispatcher(config, Store(config.db_path), RunnerFactory({"local": LocalRunner()}))
    assert dispatcher.run(RunRequest("hourly")).outcome is Outcome.FAILED
