"""The SQLite metrics log, on a real database file."""

from __future__ import annotations

import pytest

from tinyml.metrics import MetricsLog

pytestmark = [pytest.mark.integration, pytest.mark.daily]


def test_log_curve_and_best(tmp_path):
    """Logged values come back as an ordered curve; best() honours min/max."""
    with MetricsLog(tmp_path / "m.db") as log:
        for step, (loss, acc) in enumerate([(0.9, 0.5), (0.4, 0.8), (0.6, 0.7)]):
            log.log("run-a", step, loss=loss, acc=acc)
        assert log.curve("run-a", "loss") == [(0, 0.9), (1, 0.4), (2, 0.6)]
        assert log.best("run-a", "loss") == (1, 0.4)
        assert log.best("run-a", "acc", mode="max") == (1, 0.8)
        assert log.best("run-b", "loss") is None


def test_reopened_database_keeps_runs(tmp_path):
    """Rows survive closing and reopening the database; re-logging a step replaces it."""
    db = tmp_path / "m.db"
    with MetricsLog(db) as log:
        log.log("run-b", 0, loss=1.0)
        log.log("run-a", 0, loss=2.0)
    with MetricsLog(db) as log:
        log.log("run-a", 0, loss=1.5)
        assert log.runs() == ["run-a", "run-b"]
        assert log.curve("run-a", "loss") == [(0, 1.5)]
