"""The store's alert and metrics queries, seen from the store (the alerts and metrics tests see
them through their callers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import AlertStep, AlertTrackRow, OutboxEntry, QuarantineRow, Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def finished(store: Store, tier: str, outcome: Outcome) -> int:
    run_id = store.create_run(tier=tier, trigger="schedule", kind="pytest")
    assert run_id is not None
    store.finish_run(run_id, outcome=outcome, finished_at=T0 + timedelta(minutes=run_id))
    return run_id


FIRING = AlertTrackRow("hourly/tests-failed", "hourly", "tests-failed", "firing", "warning")


def track(**changes: Any) -> AlertTrackRow:
    return replace(FIRING, **changes)


def entry(row_id: str) -> OutboxEntry:
    return OutboxEntry(row_id, "hook", "hourly/tests-failed", "fire", {"n": 1})


class TestAlertStep:
    def test_decide_sees_streak_and_tracks_and_its_writes_land(self, store: Store) -> None:
        """decide gets the streak up to the run and the tier's tracks; tracks and rows are saved."""
        finished(store, "hourly", Outcome.PASSED)
        finished(store, "hourly", Outcome.FAILED)
        run_id = finished(store, "hourly", Outcome.FAILED)
        seen: list[tuple[int, Sequence[AlertTrackRow]]] = []

        def first(streak: int, tracks: Sequence[AlertTrackRow]) -> AlertStep:
            seen.append((streak, tracks))
            return AlertStep([track(last_run_id=run_id, failing=("t::a",))], [entry("r1")])

        assert store.apply_alert_step("hourly", run_id, T0, first) == ["r1"]
        assert seen == [(2, [])]

        def again(streak: int, tracks: Sequence[AlertTrackRow]) -> AlertStep:
            seen.append((streak, tracks))
            return AlertStep(tracks, [entry("r1"), entry("r2")])

        # An existing id is skipped, not an error; the track round-trips unchanged.
        assert store.apply_alert_step("hourly", run_id, T0, again) == ["r2"]
        assert seen[1][1] == [track(last_run_id=run_id, failing=("t::a",))]
        assert [s["fingerprint"] for s in store.alert_states()] == ["hourly/tests-failed"]

    def test_a_failing_decide_writes_nothing(self, store: Store) -> None:
        """The step is one transaction: an error in decide leaves neither tracks nor rows."""
        run_id = finished(store, "hourly", Outcome.FAILED)

        def broken(streak: int, tracks: Sequence[AlertTrackRow]) -> AlertStep:
            raise RuntimeError("rules broke")

        with pytest.raises(RuntimeError):
            store.apply_alert_step("hourly", run_id, T0, broken)
        assert store.alert_states() == []
        assert store.outbox_rows() == []

    def test_external_state_is_merged_per_sink(self, store: Store) -> None:
        """outbox_complete keeps each sink's memory apart on the fingerprint's row."""
        run_id = finished(store, "hourly", Outcome.FAILED)
        store.apply_alert_step(
            "hourly", run_id, T0, lambda _s, _t: AlertStep([track()], [entry("r1")])
        )
        row = store.outbox_due(T0)[0]
        assert store.outbox_claim(row, T0, T0 + timedelta(minutes=1))
        assert store.outbox_complete(row, 1, T0, {"issue": 7})
        assert not store.outbox_complete(row, 1, T0, {"issue": 8})  # no longer sending
        assert store.alert_external("hourly/tests-failed", "hook") == {"issue": 7}
        assert store.alert_external("hourly/tests-failed", "other") == {}


class TestStats:
    def test_tally_rows_return_pending_then_newer(self, store: Store) -> None:
        """Rows still active at the baseline come back first, then every row above the cursor."""
        done = finished(store, "hourly", Outcome.PASSED)
        active = store.create_run(tier="daily", trigger="schedule", kind="pytest")
        assert active is not None
        top, pending = store.tally_baseline()
        assert (top, pending) == (active, {active})
        newer = finished(store, "weekly", Outcome.FAILED)
        rows = store.tally_rows(top, pending)
        assert [(r.id, r.outcome) for r in rows] == [(active, "queued"), (newer, "failed")]
        assert done not in {r.id for r in rows}

    def test_data_version_moves_with_every_commit_of_any_connection(self, store: Store) -> None:
        """Reads leave it alone; this store's writes and another connection's (what another
        process holds) each move it, so a scrape can tell an unchanged store in one pragma."""
        before = store.data_version()
        if store.is_postgres:  # no such counter: every scrape reads the tables again
            assert before is None
            return
        assert before is not None
        with store.stats_reader() as reader:
            reader.active_counts()
        store.last_slot("hourly")
        assert store.data_version() == before
        finished(store, "hourly", Outcome.PASSED)
        own = store.data_version()
        assert own != before
        other = Store(store.path)
        try:
            other.outbox_enqueue(entry("a"), T0)
        finally:
            other.close()
        assert store.data_version() not in (before, own)

    def test_next_quarantine_expiry_is_the_earliest_one_still_ahead(self, store: Store) -> None:
        for nodeid, days in (("t.py::gone", -1), ("t.py::late", 9), ("t.py::soon", 2)):
            at = T0 + timedelta(days=days)
            store.quarantine_add(QuarantineRow(nodeid, "flaky", T0, expires_at=at))
        store.quarantine_add(QuarantineRow("t.py::forever", "flaky", T0))
        with store.stats_reader() as reader:
            assert reader.next_quarantine_expiry(T0) == T0 + timedelta(days=2)
            assert reader.next_quarantine_expiry(T0 + timedelta(days=10)) is None

    def test_reader_answers_in_one_snapshot(self, store: Store) -> None:
        """The reader's answers agree with the store's own queries."""
        for outcome in (Outcome.PASSED, Outcome.FAILED, Outcome.INFRA_ERROR, Outcome.FAILED):
            finished(store, "hourly", outcome)
        running = store.create_run(tier="hourly", trigger="schedule", outcome="running")
        assert running is not None
        store.acquire_leases(running, "hourly", [(0, "GPU-0")])
        store.outbox_enqueue(entry("a"), T0)
        with store.stats_reader() as reader:
            assert reader.active_counts() == {("hourly", "running"): 1}
            recent = reader.recent("hourly", 3)
            assert [o for o, _ in recent] == ["running", "failed", "infra-error"]
            assert reader.recent_of(["hourly", "daily"], 3) == {"hourly": recent, "daily": ()}
            assert reader.failure_streak("hourly") == store.consecutive_failures("hourly") == 2
            green = store.last_green("hourly")
            assert green is not None
            assert reader.last_finished_at("hourly", ["passed"]) == green.finished_at
            assert [(r.gpu_index, r.gpu_uuid, r.tier) for r in reader.leases()] == [
                (0, "GPU-0", "hourly")
            ]
            assert reader.outbox_pending() == (1, T0)
