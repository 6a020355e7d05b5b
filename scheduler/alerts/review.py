"""The listener that delivers a ``kind: review`` run's report: ONE issue per review tier.

After a review run passes, its Markdown report (``review.md`` in the run dir) becomes an alert
with the fingerprint ``<tier>/markers-review``: the GitHub sink opens that issue the first time
(found again by the fingerprint marker in its body, so restarts never open a second one) and
comments the new report every quarter. Only sinks that keep reports (issue trackers:
``Sink.keeps_reports``) get it; chat, webhook and Alertmanager sinks are not bothered. Reading
the report is bounded; nothing here raises into the dispatcher.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import structlog

from scheduler.alerts.listener import FinishedRunListener
from scheduler.alerts.outbox import entries_for
from scheduler.alerts.payload import Alert, RunFacts, run_url
from scheduler.alerts.rules import Action, Phase, Severity
from scheduler.alerts.sinks.base import Sink
from scheduler.kernel.events import RunFinished
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord

log = structlog.get_logger("schedctl.alerts")

REVIEW_CLASS = "quarterly marker review"
REPORT_FILE = "review.md"
MAX_REPORT_CHARS = 60_000  # a GitHub issue body holds 65536


def review_alert(record: RunRecord, report: str, now: datetime, public_url: str | None) -> Alert:
    if len(report) > MAX_REPORT_CHARS:
        report = report[:MAX_REPORT_CHARS] + "\n\n… (cut; the whole report is in the run dir)"
    facts = RunFacts(
        run_id=record.id,
        outcome=record.outcome.value,
        trigger=record.trigger,
        reason=record.reason or "",
        sha=record.sha,
        finished_at=record.finished_at.isoformat() if record.finished_at else None,
    )
    return Alert(
        fingerprint=f"{record.tier}/markers-review",
        tier=record.tier,
        failure_class=REVIEW_CLASS,
        action=Action.REPEAT.value,
        state=Phase.FIRING.value,
        severity=Severity.INFO.value,
        created_at=now.isoformat(),
        run=facts,
        show_command=f"schedctl show {record.id}",
        url=run_url(public_url, record.id),
        report=report,
    )


class ReviewDelivery(FinishedRunListener):
    """Listener for :class:`RunFinished` of ``kind: review`` runs."""

    failure_event = "markers_review_delivery_failed"

    def accepts(self, sink: Sink) -> bool:
        return sink.keeps_reports

    def on_finished(self, event: RunFinished) -> None:
        self.deliver(event.record)

    def deliver(self, record: RunRecord) -> int:
        """Enqueue the run's report for every sink that takes it; the rows enqueued."""
        if record.kind != "review" or record.outcome is not Outcome.PASSED or not record.run_dir:
            return 0
        path = Path(record.run_dir) / REPORT_FILE
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                report = fh.read(MAX_REPORT_CHARS + 1)
        except OSError:
            log.warning("markers_review_missing", run_id=record.id, path=str(path))
            return 0
        now = self.clock()
        alert = review_alert(record, report, now, self.public_url)
        enqueued = sum(
            self.store.outbox_enqueue(entry, now)
            for entry in entries_for(alert, self.sinks, record.id)
        )
        self.enqueued(enqueued)
        return enqueued
