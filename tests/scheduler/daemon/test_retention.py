"""Retention: old run dirs go, rows stay with pruned_at; fresh and active runs are untouched."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler.config import Config
from scheduler.daemon.retention import Pruner, RetentionService
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def add_run(config: Config, store: Store, outcome: Outcome, age: timedelta) -> tuple[int, Path]:
    finished = NOW - age
    run_id = store.create_run(
        tier="hourly", kind="pytest", trigger="schedule", outcome=outcome, finished_at=finished
    )
    assert run_id is not None
    run_dir = config.runs_dir / str(run_id)
    (run_dir / "plugin").mkdir(parents=True)
    (run_dir / "output.log").write_bytes(b"x" * 1000)
    store.update_run(run_id, run_dir=str(run_dir))
    return run_id, run_dir


class FakeSource:
    def __init__(self) -> None:
        self.calls: list[timedelta] = []

    def prune_worktrees(self, older_than: timedelta) -> int:
        self.calls.append(older_than)
        return 2


def test_prunes_by_outcome_and_age_and_keeps_rows(make_config: Callable[..., Config]) -> None:
    """Passed runs go after 7 d, failed after 30 d; rows remain with pruned_at set."""
    config = make_config()
    store = Store(config.db_path)
    old_pass = add_run(config, store, Outcome.PASSED, timedelta(days=8))
    new_pass = add_run(config, store, Outcome.PASSED, timedelta(days=6))
    mid_fail = add_run(config, store, Outcome.FAILED, timedelta(days=8))
    old_fail = add_run(config, store, Outcome.TIMEOUT, timedelta(days=31))
    running = add_run(config, store, Outcome.RUNNING, timedelta(days=60))
    source = FakeSource()

    report = Pruner(config, store, source, clock=lambda: NOW).prune()

    assert sorted(report.runs) == sorted([old_pass[0], old_fail[0]])
    assert report.bytes_freed == 2000 and report.worktrees == 2
    assert source.calls == [timedelta(days=30)]
    for run_id, run_dir in (old_pass, old_fail):
        assert not run_dir.exists()
        assert store.get_run(run_id).pruned_at == NOW
    for run_id, run_dir in (new_pass, mid_fail, running):
        assert run_dir.exists() and store.get_run(run_id).pruned_at is None
    assert len(store.list_runs()) == 5
    assert Pruner(config, store, clock=lambda: NOW).prune().runs == []


def test_never_deletes_outside_runs_dir(make_config: Callable[..., Config], tmp_path: Path) -> None:
    """A run_dir pointing outside <state>/runs is marked pruned but never deleted."""
    config = make_config()
    store = Store(config.db_path)
    outside = tmp_path / "precious"
    outside.mkdir()
    run_id = store.create_run(
        tier="hourly",
        kind="pytest",
        trigger="manual",
        outcome=Outcome.PASSED,
        finished_at=NOW - timedelta(days=90),
        run_dir=str(outside),
    )
    report = Pruner(config, store, clock=lambda: NOW).prune()
    assert report.runs == [run_id] and outside.exists()


def test_service_prunes_at_start(make_config: Callable[..., Config]) -> None:
    """The retention service runs one pass as soon as it starts, then stops promptly."""
    config = make_config(retention={"passed": "1d", "failed": "2d"})
    store = Store(config.db_path)
    run_id, run_dir = add_run(config, store, Outcome.PASSED, timedelta(days=2))
    real_now = datetime.now(timezone.utc)
    store.update_run(run_id, finished_at=real_now - timedelta(days=2))
    service = RetentionService(Pruner(config, store), interval_s=3600)
    service.start(None)  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if store.get_run(run_id).pruned_at is not None:
                break
            service._stop.wait(0.05)
    finally:
        service.stop()
    assert store.get_run(run_id).pruned_at is not None and not run_dir.exists()
