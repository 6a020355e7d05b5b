"""The listener that alerts a quarantine's owner once when the quarantine runs out.

Checked after every finished run (the daemon runs tiers often; ``schedctl run`` checks too).
The claim and the outbox rows are one transaction (:meth:`Store.claim_expired_quarantines`), so
an expiry is alerted exactly once, whichever process sees it first.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import structlog

from scheduler.alerts.listener import FinishedRunListener
from scheduler.alerts.outbox import entries_for
from scheduler.alerts.payload import Alert, FailingTest, RunFacts, run_url
from scheduler.alerts.rules import Action, Phase, Severity
from scheduler.kernel.events import RunFinished
from scheduler.store.engine import OutboxEntry, QuarantineRow

log = structlog.get_logger("schedctl.alerts")

QUARANTINE_TIER = "quarantine"
EXPIRED_CLASS = "quarantine-expired"


def expiry_alert(row: QuarantineRow, now: datetime, public_url: str | None) -> Alert:
    digest = hashlib.sha256(row.nodeid.encode()).hexdigest()[:16]
    expired = row.expires_at.isoformat() if row.expires_at else "?"
    facts = RunFacts(
        run_id=0,
        outcome=EXPIRED_CLASS,
        trigger="quarantine",
        reason=f"the quarantine of {row.nodeid} expired at {expired}: {row.reason}; "
        "its failures fail the tier again",
        failing=(FailingTest(row.nodeid, "quarantined", row.reason[:240], row.owner or ""),),
        failing_total=1,
    )
    return Alert(
        fingerprint=f"{QUARANTINE_TIER}/{digest}",
        tier=QUARANTINE_TIER,
        failure_class=EXPIRED_CLASS,
        action=Action.FIRE.value,
        state=Phase.FIRING.value,
        severity=Severity.WARNING.value,
        created_at=now.isoformat(),
        run=facts,
        show_command="schedctl quarantine list",
        url=run_url(public_url, 0) if public_url else None,
    )


class QuarantineExpiry(FinishedRunListener):
    """Listener for :class:`RunFinished`: alert every newly expired quarantine, once."""

    failure_event = "quarantine_expiry_failed"

    def on_finished(self, event: RunFinished) -> None:
        self.check()

    def check(self) -> list[QuarantineRow]:
        now = self.clock()

        def entries(row: QuarantineRow) -> list[OutboxEntry]:
            return entries_for(expiry_alert(row, now, self.public_url), self.sinks)

        claimed = self.store.claim_expired_quarantines(now, entries)
        for row in claimed:
            log.warning("quarantine_expired", nodeid=row.nodeid, owner=row.owner)
        self.enqueued(len(claimed))
        return claimed
