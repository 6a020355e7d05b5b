"""A generated project shaped like the reference analysis, with recorded history.

643 tests in 20 files: 12 ``hourly``, 14 ``daily`` (8 of them also ``integration``, one also
``slow``), 3 more ``slow`` and the rest unmarked: 29 marked (4.5 %), counts 12/14/8/4 as in the
reference. History: six runs over two commits with per-test durations (a few over a minute) and
flaky tests (fail then pass at one commit), one of them in hourly.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.store import Store, TestResultRow

TOTAL = 643
FILES = 20
HOURLY = range(0, 12)
DAILY_INTEGRATION = range(12, 20)
DAILY_SLOW = range(20, 21)
DAILY = range(21, 26)
SLOW = range(26, 29)
FLAKY = (3, 100, 200, 300)  # test 3 is hourly
SLOW_UNMARKED = (400, 401)  # p90 over the slow threshold, not marked slow
GROWN = 5  # an hourly test whose duration grew in the newest runs
CRITICAL_FILE = 7  # tests in test_area07.py are critical (critical_paths glob)

PYPROJECT = """\
[tool.pytest.ini_options]
markers = [
    "slow: marks tests as slow",
    "hourly: critical tests run every hour",
    "daily: comprehensive tests run once per day",
    "integration: tests requiring external services",
]
"""


def markers_of(i: int) -> list[str]:
    if i in HOURLY:
        return ["hourly"]
    if i in DAILY_INTEGRATION:
        return ["daily", "integration"]
    if i in DAILY_SLOW:
        return ["daily", "slow"]
    if i in DAILY:
        return ["daily"]
    if i in SLOW:
        return ["slow"]
    return []


def nodeid(i: int) -> str:
    return f"tests/test_area{i % FILES:02d}.py::test_case_{i:03d}"


def write_project(root: Path) -> Path:
    """The project's files under ``root`` (every test passes at once)."""
    tests = root / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    bodies: dict[int, list[str]] = {f: ["import pytest", ""] for f in range(FILES)}
    for i in range(TOTAL):
        lines = bodies[i % FILES]
        lines += [f"@pytest.mark.{m}" for m in markers_of(i)]
        lines += [f"def test_case_{i:03d}():", "    pass", ""]
    for f, lines in bodies.items():
        (tests / f"test_area{f:02d}.py").write_text("\n".join(lines))
    return root


def duration(i: int, run: int, rng: random.Random) -> float:
    if i in SLOW_UNMARKED or i in SLOW or i in DAILY_SLOW:
        return 90.0 + rng.random() * 10
    if i == GROWN:
        return 0.2 if run < 3 else 8.0
    if i in DAILY_INTEGRATION:
        return 20.0 + rng.random()
    return 0.05 + (i * 7919 % 1000) / 1000 * 2.5 + rng.random() * 0.05


def record_history(store: Store, runs: int = 6) -> None:
    """``runs`` runs of every test (commit a, then b); flaky tests fail in run 1 (commit a)."""
    rng = random.Random(14)
    start = utcnow() - timedelta(days=3)
    for run in range(runs):
        run_id = store.create_run(tier="daily", trigger="schedule", kind="pytest")
        assert run_id is not None
        rows = []
        for i in range(TOTAL):
            outcome = "failed" if (i in FLAKY and run == 1) else "passed"
            rows.append(TestResultRow(nodeid(i), outcome, duration(i, run, rng)))
        store.finish_run(
            run_id,
            rows,
            outcome=Outcome.FAILED if run == 1 else Outcome.PASSED,
            sha=("a" if run < runs // 2 else "b") * 40,
            finished_at=start + timedelta(hours=run),
        )


def collect_ids(project: Path, *args: str) -> set[str]:
    """Node ids a plain `python -m pytest --collect-only` selects in ``project`` (its tests/ on
    the path, where `apply --write` puts the catalog plugin)."""
    env = {**os.environ, "PYTHONPATH": str(project / "tests")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: none selected
    return {line for line in proc.stdout.splitlines() if "::" in line}
