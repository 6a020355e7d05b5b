"""The dispatcher listener: finished runs become rule decisions and outbox rows, nothing else.

It never sends anything (the :mod:`worker` does) and never raises into the dispatcher. The slow
part, reading the failing tests and ``git log`` since the last green run, happens before the
write transaction; the rule evaluation, the ``alert_state`` rows and the outbox rows are written
in one ``BEGIN IMMEDIATE`` transaction, so a crash leaves either all of them or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from scheduler.alerts import rules
from scheduler.alerts.drains import drain_entries
from scheduler.alerts.outbox import entries_for
from scheduler.alerts.payload import (
    MAX_FAILING,
    Alert,
    FailingTest,
    RunFacts,
    build_alert,
    first_error_line,
)
from scheduler.alerts.sinks.base import Sink
from scheduler.kernel.clock import utcnow
from scheduler.kernel.events import Event, GpuDrained, GpuUndrained, RunFinished, SlotMissed
from scheduler.store.engine import (
    AlertStep,
    AlertTrackRow,
    OutboxEntry,
    RunRecord,
    Store,
    change_range,
)

log = structlog.get_logger("schedctl.alerts")

ChangesFn = Callable[[str, str], list[str]]
FAILING_OUTCOMES = ("failed", "error")
FLAKY_OUTCOME = "flaky"
CURSOR_KEY = "alerts_cursor"


class AlertRecorder:
    """Listener for :class:`RunFinished` and :class:`SlotMissed` (and GPU drains, see
    :mod:`.drains`)."""

    def __init__(
        self,
        store: Store,
        sinks: Sequence[Sink],
        *,
        policy: rules.RulePolicy | None = None,
        public_url: str | None = None,
        changes: ChangesFn | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.policy = policy or rules.RulePolicy()
        self.public_url = public_url
        self.changes = changes
        self.clock = clock
        self.on_enqueued = on_enqueued

    def __repr__(self) -> str:
        return f"AlertRecorder(sinks={[s.name for s in self.sinks]})"

    def __call__(self, event: Event) -> None:
        if isinstance(event, GpuDrained | GpuUndrained):
            self.record_drain(event)
            return
        if not isinstance(event, RunFinished | SlotMissed):
            return
        try:
            record = getattr(event, "record", None)
            if not isinstance(record, RunRecord):
                record = self.store.get_run(event.run_id)
            self.record(record)
        except Exception:
            log.exception("alert_recording_failed", run_id=event.run_id, tier=event.tier)

    def record_drain(self, event: GpuDrained | GpuUndrained) -> list[str]:
        """One outbox row per accepting sink for a drain or undrain; never raises."""
        try:
            entries = drain_entries(event, self.sinks, self.clock)
            now = self.clock()
            written = [e.id for e in entries if self.store.outbox_enqueue(e, now)]
        except Exception:
            log.exception("drain_alert_failed", gpu=event.index, uuid=event.uuid)
            return []
        if written and self.on_enqueued is not None:
            self.on_enqueued()
        return written

    def catch_up(self, limit: int = 500) -> int:
        """Apply finished runs that no listener saw; returns how many runs were applied.

        Runs made by ``schedctl run`` without a daemon, or finished just before a crash, reach
        the outbox this way. A cursor in the store marks the newest run below which every run
        is final and applied; replaying a run the listener already applied changes nothing (the
        rules ignore a run a track has seen). On first use the cursor starts at the newest run,
        so years of history are not alerted at once.
        """
        stored = self.store.get_meta(CURSOR_KEY)
        if stored is None:
            self.store.set_meta(CURSOR_KEY, str(self.store.max_run_id()))
            return 0
        cursor, applied = int(stored), 0
        for record in self.store.runs_after(cursor, limit):
            if not record.outcome.is_final:
                break
            self.record(record)
            cursor, applied = record.id, applied + 1
        self.store.set_meta(CURSOR_KEY, str(cursor))
        return applied

    def record(self, record: RunRecord) -> list[str]:
        """Apply one run; returns the ids of the outbox rows written."""
        if not rules.is_relevant(record.outcome):
            return []
        cls = rules.failure_class(record.outcome)
        facts = self._facts(record, cls)
        failing = tuple(sorted({f.nodeid for f in facts.failing}))
        if facts.failing_total > len(facts.failing):
            failing = self._all_failing(record.id)
        flaky = tuple(sorted({f.nodeid for f in facts.flaky}))
        now = self.clock()
        decisions: list[rules.Decision] = []

        def decide(streak: int, rows: Sequence[AlertTrackRow]) -> AlertStep:
            obs = rules.Observation(
                run_id=record.id,
                tier=record.tier,
                outcome=record.outcome,
                streak=streak,
                failing=failing,
                flaky=flaky,
            )
            tracks = {row.fingerprint: _track(row) for row in rows}
            decisions[:] = rules.evaluate(tracks, obs, self.policy)
            entries: list[OutboxEntry] = []
            for decision in decisions:
                if decision.action is not None:
                    alert = build_alert(decision, facts, created_at=now, public_url=self.public_url)
                    entries += self._entries(alert, record.id)
            return AlertStep([_row(d.track) for d in decisions], entries)

        # Streak, tracks, rules and writes in one BEGIN IMMEDIATE transaction.
        written = self.store.apply_alert_step(record.tier, record.id, now, decide)
        for decision in decisions:
            if decision.action is not None:
                log.info(
                    "alert_decided",
                    fingerprint=decision.track.fingerprint,
                    action=decision.action.value,
                    severity=decision.track.severity.value,
                    run_id=record.id,
                )
        if written and self.on_enqueued is not None:
            self.on_enqueued()
        return written

    def _entries(self, alert: Alert, run_id: int) -> list[OutboxEntry]:
        return entries_for(alert, self.sinks, run_id)

    # -- facts -----------------------------------------------------------------------------------

    def _facts(self, record: RunRecord, cls: rules.FailureClass | None) -> RunFacts:
        source = record.source or {}
        failing: list[FailingTest] = []
        flaky: list[FailingTest] = []
        total = 0
        executed = cls is None or not cls.is_infra
        if executed and (cls is not None or record.counts.get("flaky")):
            results = self.store.test_results_for(record.id)
            rows = [t for t in results if t.outcome in FAILING_OUTCOMES]
            total = len(rows)
            failing = [
                FailingTest(t.nodeid, t.outcome, first_error_line(t.message), t.owner or "")
                for t in rows[:MAX_FAILING]
            ]
            # Every flake is kept (not capped): the rules' fingerprint state needs the full set.
            flaky = [
                FailingTest(t.nodeid, t.outcome, "failed, then passed on rerun", t.owner or "")
                for t in results
                if t.outcome == FLAKY_OUTCOME
            ]
        green = self.store.last_green(record.tier, before_id=record.id)
        changes: list[str] = []
        span = change_range(green, record)
        if cls is not None and not cls.is_infra and self.changes is not None and span:
            changes = self._changes(*span)
        return RunFacts(
            run_id=record.id,
            outcome=record.outcome.value,
            trigger=record.trigger,
            reason=record.reason,
            sha=record.sha,
            ref=record.ref,
            subject=str(source.get("subject", "")),
            author=str(source.get("author", "")),
            host=record.host,
            finished_at=record.finished_at.isoformat() if record.finished_at else None,
            duration_s=record.duration_s,
            counts=dict(record.counts),
            failing=tuple(failing),
            failing_total=total,
            flaky=tuple(flaky),
            last_green_run_id=green.id if green else None,
            last_green_sha=green.sha if green else None,
            changes_since_green=tuple(changes),
        )

    def _changes(self, old: str, new: str) -> list[str]:
        assert self.changes is not None
        try:
            return list(self.changes(old, new))
        except Exception as exc:  # git trouble must not cost the alert
            log.warning("alert_changes_failed", error=f"{type(exc).__name__}: {exc}")
            return []

    def _all_failing(self, run_id: int) -> tuple[str, ...]:
        rows = self.store.test_results_for(run_id)
        return tuple(sorted({t.nodeid for t in rows if t.outcome in FAILING_OUTCOMES}))


def _track(row: AlertTrackRow) -> rules.Track:
    return rules.Track(
        fingerprint=row.fingerprint,
        tier=row.tier,
        failure_class=rules.FailureClass(row.failure_class),
        phase=rules.Phase(row.state),
        severity=rules.Severity(row.severity),
        consecutive=row.consecutive,
        greens=row.greens,
        last_run_id=row.last_run_id,
        failing=row.failing,
    )


def _row(track: rules.Track) -> AlertTrackRow:
    return AlertTrackRow(
        fingerprint=track.fingerprint,
        tier=track.tier,
        failure_class=track.failure_class.value,
        state=track.phase.value,
        severity=track.severity.value,
        consecutive=track.consecutive,
        greens=track.greens,
        last_run_id=track.last_run_id,
        failing=tuple(track.failing),
    )
