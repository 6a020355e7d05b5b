"""The API's routes: submitting runs with overrides, the event stream, reads, cancel."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.kernel.errors import UnknownRunError, UsageError
from scheduler.kernel.outcome import Outcome
from tests.scheduler.api.conftest import Harness, raw, wait_final
from tests.waiting import wait_for


class TestSubmit:
    def test_manual_trigger_and_overrides_are_recorded(self, start: Callable[..., Harness]) -> None:
        """The CLI's trigger 'manual' and a marker override reach the run row."""
        h = start()
        run_id = h.unix().submit("manual", trigger="manual", markers="daily")["run_id"]
        wait_final(h.store, run_id)
        record = h.store.get_run(run_id)
        assert (record.trigger, record.markers) == ("manual", "daily")

    def test_events_stream_ends_with_the_summary(self, start: Callable[..., Harness]) -> None:
        """The event stream carries the run row, the results lines and a final summary."""
        h = start(duration_s=0.5)
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        events = list(client.events(run_id))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "run" and kinds[-1] == "finished"
        assert "collection" in kinds and "test" in kinds
        final = events[-1]["run"]
        assert final["run_id"] == run_id and final["outcome"] == "passed"
        assert final["counts"]["passed"] >= 1


class TestReadEndpoints:
    def test_status_tiers_runs(self, start: Callable[..., Harness]) -> None:
        """Status names the daemon pid and next fires; runs and tiers list what the store has."""
        h = start()
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        wait_final(h.store, run_id)
        status = client.status()
        assert status["daemon"]["pid"] > 0 and status["daemon"]["uptime_s"] >= 0
        rows = {row["tier"]: row for row in status["tiers"]}
        assert rows["hourly"]["next"].endswith("Z") and rows["manual"]["next"] is None
        assert rows["hourly"]["last_outcome"] == "passed"
        assert [r["id"] for r in client.runs(tier="hourly")] == [run_id]
        assert client.run(run_id)["outcome"] == "passed"
        assert {t["tier"] for t in client.tiers()} == {"hourly", "manual"}
        assert client.gpus() == {"pool": False, "leases": [], "waiting": []}

    def test_errors_are_json_with_status(self, start: Callable[..., Harness]) -> None:
        """Unknown runs are 404, unknown tiers 422 naming the tier, bad bodies 400."""
        h = start()
        client = h.unix()
        with pytest.raises(UnknownRunError):
            client.run(999)
        with pytest.raises(UsageError, match="unknown tier 'nope'"):
            client.submit("nope")
        with pytest.raises(UsageError, match="timeout_s"):
            client.submit("hourly", timeout_s=-1)
        status, body = raw(h, "GET", "/v1/nothing", None, {})
        assert status == 404 and "no such endpoint" in body["error"]
        status, body = raw(h, "GET", "/v1/runs?limit=abc", None, {})
        assert status == 400 and "limit" in body["error"]
        status, body = raw(h, "DELETE", "/v1/runs", None, {})
        assert status == 405


class TestCancel:
    def test_cancel_running_run(self, start: Callable[..., Harness]) -> None:
        """POST cancel stops a running run and records the given reason."""
        h = start(duration_s=30)
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        wait_for(lambda: h.store.get_run(run_id).outcome is Outcome.RUNNING, 30, "the run")
        client.cancel(run_id, "enough")
        assert wait_final(h.store, run_id) is Outcome.CANCELLED
        assert h.store.get_run(run_id).reason == "enough"
        with pytest.raises(UsageError, match="not running"):
            client.cancel(run_id)
