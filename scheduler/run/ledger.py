"""The run ledger: the only code that writes a run's outcome to the store and emits ``RunFinished``.

Every run row goes through here: opened as ``queued`` before anything runs, marked ``running``
when its process starts, and finished exactly once with a :class:`~scheduler.kernel.outcome.
Decision`. Rows that are final from birth (a missed slot, an overlap skip) are written here too.
The dispatcher, the daemon and crash recovery all finish runs through one ``RunLedger``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from runners.base import RunResult
from scheduler.kernel.clock import Clock, utcnow
from scheduler.kernel.events import EventBus, RunFinished
from scheduler.kernel.outcome import Decision, Outcome
from scheduler.run.results import ParsedResults, empty_counts
from scheduler.store.base import RunAlreadyFinal

if TYPE_CHECKING:
    from scheduler.run.protocols import RunStore
    from scheduler.store.records import RunRecord

log = structlog.get_logger("schedctl.ledger")


def slot_key(tier: str, slot: datetime | None) -> str | None:
    """The idempotency key of a scheduled slot: one row per ``tier@slot``, ever."""
    return f"{tier}@{slot.isoformat()}" if slot else None


STARTED_COLUMNS: Mapping[str, Any] = {"runner": None, "argv": [], "image": None}
"""What a kind's provenance may give when a run starts, as a newly opened row holds them."""


@dataclass(frozen=True)
class RunRow:
    """The identity of a new run row: what was asked, by whom, where."""

    tier: str
    kind: str
    trigger: str
    host: str
    owner_pid: int
    owner_identity: str | None = None
    slot: datetime | None = None
    ref: str | None = None
    markers: str | None = None

    @property
    def idempotency_key(self) -> str | None:
        return slot_key(self.tier, self.slot)

    def values(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "kind": self.kind,
            "trigger": self.trigger,
            "slot": self.slot,
            "idempotency_key": self.idempotency_key,
            "ref": self.ref,
            "host": self.host,
            "owner_pid": self.owner_pid,
            "owner_identity": self.owner_identity,
            "markers": self.markers,
        }


@dataclass(frozen=True)
class Evidence:
    """What a finished process left: the runner's result and the parsed per-test results."""

    result: RunResult
    parsed: ParsedResults = field(default_factory=ParsedResults)
    details: Mapping[str, Any] = field(default_factory=dict)


class RunLedger:
    """Writes run rows and their final outcome; publishes ``RunFinished`` for each final row."""

    def __init__(self, store: RunStore, events: EventBus, clock: Clock = utcnow) -> None:
        self.store = store
        self.events = events
        self.clock = clock

    def open(self, row: RunRow, run_dir_for: Callable[[int], Path] | None = None) -> int | None:
        """Insert a ``queued`` row; ``None`` when its slot already has one.

        ``run_dir_for`` gives the run's directory from its id: written with the row, in one
        transaction.

        Raises:
            ActiveRunExists: the tier has an active run (the store's unique index decides).
        """
        if run_dir_for is None:
            return self.store.create_run(**row.values())
        return self.store.create_run(lambda run_id: str(run_dir_for(run_id)), **row.values())

    def open_final(self, row: RunRow, decision: Decision) -> RunRecord | None:
        """Insert a row that is final from birth (missed slot, overlap); ``None`` if the slot has
        a row already. Emits ``RunFinished`` for it."""
        now = self.clock()
        run_id = self.store.create_run(
            **row.values(),
            outcome=decision.outcome,
            reason=decision.reason,
            queued_at=now,
            started_at=now,
            finished_at=now,
            duration_s=0.0,
        )
        if run_id is None:
            return None
        record = self.store.get_run(run_id)
        log.warning(
            "run_not_run", run_id=run_id, tier=row.tier, outcome=decision.outcome.value,
            reason=decision.reason,
        )  # fmt: skip
        self._published(record)
        return record

    def mark_running(self, run_id: int, **provenance: Any) -> None:
        """The run's process starts: ``running``, with what the kind says it runs.

        Every :data:`STARTED_COLUMNS` is written (unset: as the row was opened), so the
        statement is the same for every kind and :meth:`rehearse` compiles it once.
        """
        self.store.update_run(run_id, **self._started(provenance))

    def rehearse(self, row: RunRow) -> None:
        """Compile the statements that open and start a run, at start-up (see
        :meth:`~scheduler.store.run_queries.RunQueries.rehearse_run`); nothing is written."""
        self.store.rehearse_run(row.values(), self._started({}))

    def _started(self, provenance: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "outcome": Outcome.RUNNING,
            "started_at": self.clock(),
            **STARTED_COLUMNS,
            **provenance,
        }

    def finish(
        self, run_id: int, decision: Decision, evidence: Evidence | None = None
    ) -> RunRecord:
        """Write the final outcome (with per-test results and provenance) and publish it.

        A run that is already final is returned as it is: a run finishes once.
        """
        current = self.store.get_run(run_id)
        if current.outcome.is_final:
            return current
        values: dict[str, Any] = {"outcome": decision.outcome, "reason": decision.reason}
        results = []
        if evidence is None:
            values["counts"] = empty_counts()
            values["finished_at"] = self.clock()
        else:
            result, parsed = evidence.result, evidence.parsed
            provenance = dict(result.provenance)
            results = parsed.tests + parsed.collect_errors
            values.update(
                exit_code=result.exit_code,
                counts=parsed.counts,
                started_at=result.started_at,
                finished_at=result.finished_at,
                duration_s=result.duration_s,
                image_id=provenance.get("image_id"),
                container_id=provenance.get("container_id"),
                details={
                    **current.details,  # links written while it ran (requeue_of) stay
                    "termination": result.termination.value,
                    "log_truncated": result.log_truncated,
                    "results_source": parsed.source,
                    "collected": parsed.collected,
                    "ignored_result_lines": parsed.ignored_lines,
                    "provenance": provenance,
                    **evidence.details,
                },
            )
        try:
            record = self.store.finish_run(run_id, results=results, **values)
        except RunAlreadyFinal:
            # Another process finished it between the read and the write (a survivor host
            # recording a dead daemon's run): it was recorded and published there, once.
            return self.store.get_run(run_id)
        log.info(
            "run_finished", run_id=run_id, tier=record.tier, outcome=record.outcome.value,
            reason=record.reason,
        )  # fmt: skip
        self._published(record)
        return record

    def _published(self, record: RunRecord) -> None:
        self.events.emit(
            RunFinished(
                record.id,
                record.tier,
                record.trigger,
                record.outcome,
                record.duration_s or 0.0,
                dict(record.counts),
                record.finished_at or self.clock(),
                record,
            )
        )
