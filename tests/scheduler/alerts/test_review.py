"""A ``kind: review`` tier run by the real dispatcher on the reference-shaped project: the report
goes through the outbox to the GitHub sink as ONE issue (not to Alertmanager), and the next
review is a comment on it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import requests

from scheduler.alerts.build import build_sinks
from scheduler.alerts.review import ReviewDelivery
from scheduler.alerts.worker import DeliveryWorker
from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.markers.report import parse_tables
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import Store
from tests.scheduler.alerts.conftest import FAST, GITHUB_TOKEN, REPO, FakeGitHub
from tests.scheduler.markers import reference
from tests.waiting import wait_for


def test_review_tier_opens_one_issue_then_comments_each_new_review(
    make_config: Callable[..., Config],
    github: FakeGitHub,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    project = reference.write_project(tmp_path / "project")
    config = make_config(
        project,
        tiers={
            "hourly": {"schedule": "15 * * * *", "timeout": "30m", "markers": "hourly"},
            "review": {"schedule": "0 9 1 */3 *", "kind": "review", "timeout": "10m"},
        },
        alerts={
            "github": [{"repo": REPO, "api_url": github.api_url}],
            "alertmanager": [{"url": github.server.url_for("/am")}],
        },
    )
    store = Store(config.db_path)
    reference.record_history(store)
    now = [utcnow()]

    def clock() -> datetime:
        return now[0]

    sinks = build_sinks(
        config.alerts, session=session, env={"SCHEDCTL_GITHUB_TOKEN": GITHUB_TOKEN},
        github_write_interval_s=0.01, clock=clock,
    )  # fmt: skip
    worker = DeliveryWorker(store, sinks.sinks, settings=FAST, clock=clock)
    review = ReviewDelivery(store, sinks.sinks, clock=clock)
    dispatcher = build_dispatcher(config, store, listeners=[review])

    def review_run() -> None:
        record = dispatcher.run(RunRequest("review", trigger="schedule"))
        assert record.outcome is Outcome.PASSED, record.reason
        assert "marker review" in record.reason

        def delivered() -> bool:
            worker.run_once()
            return all(r.state == "sent" for r in store.outbox_rows(None, 100))

        wait_for(delivered, 20, "the review delivered")

    try:
        review_run()
        assert {r.sink for r in store.outbox_rows(None, 100)} == {"github"}, "issue sinks only"
        issues = github.issue_for("review/markers-review")
        assert len(issues) == 1
        body = issues[0].body
        assert "# Quarterly marker review" in body
        tables = parse_tables(body)
        assert any(row[0] == "(marked)" and row[2] == "29" for row in tables[-1])
        assert reference.nodeid(reference.GROWN) in {row[0] for row in tables[0]}

        now[0] += timedelta(days=91)
        review_run()
        issues = github.issue_for("review/markers-review")
        assert len(issues) == 1 and len(github.issues) == 1
        assert len(issues[0].comments) == 1
        assert "# Quarterly marker review" in issues[0].comments[0]
    finally:
        worker.stop()
