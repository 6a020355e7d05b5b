"""`schedctl run` stages its results and merges earlier runs' staged results while its tests
run (scheduler/store/staging.py): off the user's path, yet staging never keeps more than the
newest run's rows when runs follow each other."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.config import load_config
from tests.schedctl import run_json

pytestmark = pytest.mark.slow


def _run(config: Path) -> int:
    return int(run_json(config, "hourly", timeout=120)[1]["run_id"])


def _per_run(path: Path, table: str) -> dict[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id").fetchall()
    finally:
        conn.close()
    return {int(r): int(n) for r, n in rows}


def test_a_run_merges_the_runs_before_it_while_its_tests_run(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    path = load_config(config).state_dir / "schedctl.db"
    first = _run(config)
    staged = _per_run(path, "test_results_staged")
    assert list(staged) == [first] and staged[first] > 0
    assert _per_run(path, "test_results") == {}
    second = _run(config)
    assert _per_run(path, "test_results") == {first: staged[first]}  # merged by the second run
    assert list(_per_run(path, "test_results_staged")) == [second]
