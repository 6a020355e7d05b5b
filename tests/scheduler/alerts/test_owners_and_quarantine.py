"""Owners reach the GitHub issue; a quarantine's expiry alerts its owner once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pytest_httpserver import HTTPServer

from scheduler.alerts.quarantine import QuarantineExpiry
from scheduler.kernel.events import RunFinished
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import QuarantineRow, TestResultRow
from tests.scheduler.alerts.conftest import REPO, FakeGitHub, Harness


def test_github_issue_body_mentions_the_owners_of_failing_tests(
    github: FakeGitHub, make_harness: Callable[..., Harness]
) -> None:
    """The issue lists each failing test with its owner and mentions every owner once."""
    h = make_harness({"github": [{"repo": REPO, "api_url": github.api_url}]})
    run_id = h.store.create_run(tier="hourly", kind="pytest", trigger="schedule")
    assert run_id is not None
    now = datetime.now(timezone.utc)
    record = h.store.finish_run(
        run_id,
        [
            TestResultRow("tests/env/test_a.py::test_one", "failed", owner="@lab/env-team"),
            TestResultRow("tests/io/test_b.py::test_two", "error", owner="@alice @lab/env-team"),
        ],
        outcome=Outcome.FAILED,
        sha="b" * 40,
    )
    h.recorder(RunFinished(run_id, "hourly", "schedule", Outcome.FAILED, 1.0, {}, now, record))
    h.deliver()
    (issue,) = github.issue_for("hourly/tests-failed")
    assert "- `tests/env/test_a.py::test_one` (@lab/env-team)" in issue.body
    assert "Owners: @lab/env-team @alice" in issue.body


def test_expired_quarantine_alerts_its_owner_once(
    httpserver: HTTPServer, make_harness: Callable[..., Harness]
) -> None:
    """A quarantine past its expiry sends one webhook naming test and owner, never a second."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    h = make_harness({"webhooks": [{"name": "lab", "url": httpserver.url_for("/hook")}]})
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    clock_now = [now]
    expiry = QuarantineExpiry(h.store, h.sinks.sinks, clock=lambda: clock_now[0])
    h.store.quarantine_add(
        QuarantineRow(
            "tests/test_x.py::test_slowpoke",
            "hangs on CI",
            now - timedelta(days=14),
            owner="@bob",
            expires_at=now + timedelta(hours=1),
        )
    )
    assert expiry.check() == []
    clock_now[0] = now + timedelta(hours=2)
    event = RunFinished(1, "hourly", "schedule", Outcome.PASSED, 1.0, {}, clock_now[0], None)
    expiry(event)
    expiry(event)
    assert expiry.check() == []
    h.deliver()
    bodies = [r.get_json() for r, _ in httpserver.log]
    assert len(bodies) == 1
    assert "tests/test_x.py::test_slowpoke" in str(bodies[0])
    assert bodies[0]["owners"] == ["@bob"]
    (row,) = h.store.quarantine_list()
    assert row.expiry_alerted_at == clock_now[0]
