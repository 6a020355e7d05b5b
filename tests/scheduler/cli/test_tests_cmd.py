"""``schedctl tests``, ``schedctl test`` and ``schedctl quarantine`` on a real store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.store import Store, TestResultRow
from tests.schedctl import invoke


def history(store: Store) -> None:
    """Commit a: x passes then fails (flaky at one commit); y always passes; z fails once."""
    for sha, x, z in (
        ("a", "passed", "passed"),
        ("a", "failed", "passed"),
        ("b", "passed", "failed"),
    ):
        run_id = store.create_run(tier="hourly", trigger="schedule", kind="pytest")
        assert run_id is not None
        store.finish_run(
            run_id,
            [
                TestResultRow("tests/test_a.py::test_x", x, 0.5, peak_rss_bytes=2**20),
                TestResultRow("tests/test_a.py::test_y", "passed", 2.0),
                TestResultRow("tests/test_b.py::test_z[a]", z, 0.1),
            ],
            outcome=Outcome.FAILED if "failed" in (x, z) else Outcome.PASSED,
            sha=sha * 40,
            finished_at=utcnow(),
        )


def test_tests_lists_stats_and_flaky_evidence(write_config: Callable[..., Path]) -> None:
    """--json gives runs, pass rate, p50 and the flaky verdict with its commit and runs."""
    config = write_config(owners={"tests/test_a.py": "@lab/a"})
    history(Store(config.parent / "state" / "schedctl.db"))
    code, out = invoke(config, "tests", "--json", "--sort", "flaky")
    assert code == 0, out
    rows = {r["nodeid"]: r for r in json.loads(out)}
    x = rows["tests/test_a.py::test_x"]
    assert (x["runs"], x["failed"], x["flaky"], x["owner"]) == (3, 1, True, "@lab/a")
    assert x["evidence"] == [{"kind": "same-commit", "sha": "a" * 40, "run_ids": [1, 2]}]
    assert rows["tests/test_b.py::test_z[a]"]["flaky"] is False
    assert rows["tests/test_a.py::test_y"]["p50_s"] == 2.0
    code, out = invoke(config, "tests", "--flaky")
    assert code == 0 and "same-commit" in out and "test_z" not in out


def test_test_shows_one_history_and_unknown_is_exit_2(write_config: Callable[..., Path]) -> None:
    """schedctl test prints the outcome strip; an unknown node id is bad input (exit 2)."""
    config = write_config()
    history(Store(config.parent / "state" / "schedctl.db"))
    code, out = invoke(config, "test", "tests/test_a.py::test_x")
    assert code == 0, out
    assert "✓✗✓" in out
    code, out = invoke(config, "test", "tests/nope.py::test_q", "--json")
    assert code == 2


def test_quarantine_add_list_remove(write_config: Callable[..., Path]) -> None:
    """Add with owner and expiry, list it (markup in the reason stays literal), remove it."""
    config = write_config()
    code, out = invoke(config, "quarantine", "add", "tests/test_a.py::test_x[/a]",
                       "--reason", "[bold]flaky[/bold] on CI", "--owner", "@bob",
                       "--expires", "14d")  # fmt: skip
    assert code == 0, out
    code, out = invoke(config, "quarantine", "list", "--json")
    (row,) = json.loads(out)
    assert (row["nodeid"], row["owner"]) == ("tests/test_a.py::test_x[/a]", "@bob")
    code, out = invoke(config, "quarantine", "list")
    assert "[bold]flaky[/bold]" in out
    assert (
        invoke(config, "quarantine", "add", "t.py::x", "--reason", "r", "--expires", "soon")[0] == 2
    )
    assert invoke(config, "quarantine", "remove", "tests/test_a.py::test_x[/a]")[0] == 0
    assert invoke(config, "quarantine", "remove", "tests/test_a.py::test_x[/a]")[0] == 2
