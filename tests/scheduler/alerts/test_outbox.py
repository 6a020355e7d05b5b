"""The outbox's guarded transitions: one owner per row, leases, order, atomic writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from scheduler.alerts.outbox import Outbox
from scheduler.kernel.events import SlotMissed
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import OutboxEntry, Store, alert_state, alerts_outbox
from tests.scheduler.alerts.conftest import FAILED_TESTS, Harness

PAYLOAD = {"note": "not a real alert"}


def _row(store: Store, row_id: str, fingerprint: str = "hourly/tests-failed", **kw: object) -> None:
    now = kw.pop("now", datetime.now(timezone.utc))
    assert isinstance(now, datetime)
    store.outbox_enqueue(OutboxEntry(row_id, "hook", fingerprint, "fire", PAYLOAD), now)


class TestTransitions:
    def test_only_one_of_many_workers_claims_a_row(self, tmp_path: Path) -> None:
        """Eight threads with their own Store race for one row; exactly one wins."""
        path = tmp_path / "s.db"
        _row(Store(path), "a")
        stores = [Store(path) for _ in range(8)]
        seen = [Outbox(s).due() for s in stores]
        wins: list[object] = []
        barrier = threading.Barrier(len(stores))

        def race(store: Store, rows: list) -> None:  # type: ignore[type-arg]
            barrier.wait()
            claim = Outbox(store).claim(rows[0])
            if claim is not None:
                wins.append(claim)

        threads = [
            threading.Thread(target=race, args=(s, r)) for s, r in zip(stores, seen, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1

    def test_duplicate_id_is_ignored(self, store: Store) -> None:
        """Enqueueing the same id twice keeps one row."""
        _row(store, "a")
        _row(store, "a")
        assert len(Outbox(store).rows()) == 1

    def test_stale_claim_cannot_complete_after_reclaim(self, store: Store) -> None:
        """An expired lease is reclaimed; the first owner's complete is then refused."""
        clock = [datetime.now(timezone.utc)]
        outbox = Outbox(store, clock=lambda: clock[0], lease_s=60)
        _row(store, "a", now=clock[0])
        first = outbox.claim(outbox.due()[0])
        assert first is not None and outbox.due() == []
        clock[0] += timedelta(seconds=61)
        second = outbox.claim(outbox.due()[0])
        assert second is not None and second.attempt == 2
        assert not outbox.complete(first)
        assert outbox.complete(second)
        assert outbox.rows()[0].state == "sent"

    def test_rows_of_a_fingerprint_go_in_order(self, store: Store) -> None:
        """A newer row waits while an older one of the same sink and fingerprint is undelivered."""
        now = datetime.now(timezone.utc)
        _row(store, "old", now=now)
        _row(store, "new", now=now + timedelta(microseconds=1))
        _row(store, "other", "daily/tests-failed", now=now + timedelta(microseconds=2))
        outbox = Outbox(store)
        assert [r.id for r in outbox.due()] == ["old", "other"]
        claim = outbox.claim(outbox.due()[0])
        assert claim is not None
        outbox.retry(claim, 3600, "down")
        assert [r.id for r in outbox.due()] == ["other"]

    def test_complete_records_external_state(self, make_harness: Callable[..., Harness]) -> None:
        """complete() merges the sink's external state into alert_state under the sink name."""
        h = make_harness({"webhooks": [{"name": "hook", "url": "http://127.0.0.1:9/x"}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        outbox = Outbox(h.store)
        claim = outbox.claim(outbox.due()[0])
        assert claim is not None
        assert outbox.complete(claim, {"issue": 7})
        assert outbox.external("hourly/tests-failed", "hook") == {"issue": 7}
        assert outbox.external("hourly/tests-failed", "other") == {}


class TestRecorder:
    def test_state_and_outbox_written_together(self, make_harness: Callable[..., Harness]) -> None:
        """A failure writes its alert_state row and one outbox row per sink in one go."""
        h = make_harness(
            {
                "webhooks": [
                    {"name": "a", "url": "http://127.0.0.1:9/a"},
                    {"name": "b", "url": "http://127.0.0.1:9/b", "tiers": ["daily"]},
                ]
            }
        )
        record = h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        with h.store.begin() as conn:
            state = conn.execute(sa.select(alert_state)).mappings().one()
            sinks = [r.sink for r in conn.execute(sa.select(alerts_outbox))]
        assert (state["state"], state["last_run_id"], state["consecutive"]) == (
            "firing",
            record.id,
            1,
        )
        assert state["failing"] == ["tests/test_a.py::test_one", "tests/test_a.py::test_two"]
        assert sinks == ["a"]  # sink b only wants the daily tier

    def test_repeated_event_for_one_run_enqueues_once(
        self, make_harness: Callable[..., Harness]
    ) -> None:
        """The daemon emits RunFinished and SlotMissed for a missed slot: one alert, not two."""
        h = make_harness({"webhooks": [{"name": "a", "url": "http://127.0.0.1:9/a"}]})
        record = h.finish("hourly", Outcome.MISSED)
        h.recorder(SlotMissed(record.id, "hourly", datetime.now(timezone.utc)))
        assert [r.action for r in h.rows()] == ["fire"]
        assert h.rows()[0].fingerprint == "hourly/missed"

    def test_listener_never_raises(self, make_harness: Callable[..., Harness]) -> None:
        """A broken store is logged by the recorder, not raised into the dispatcher."""
        h = make_harness({"webhooks": [{"name": "a", "url": "http://127.0.0.1:9/a"}]})
        h.recorder(SlotMissed(999, "hourly", datetime.now(timezone.utc)))  # no such run
        assert h.rows() == []
