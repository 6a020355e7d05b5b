"""The worker against endpoints that misbehave: outages, 5xx, 429, GitHub limits, crashes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from pytest_httpserver import HTTPServer
from structlog.testing import capture_logs

from scheduler.alerts.outbox import Outbox
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store
from tests.scheduler.alerts.conftest import (
    FAILED_TESTS,
    FAST,
    REPO,
    FakeGitHub,
    Harness,
    Recorder,
)
from tests.waiting import FakeClock, wait_for

PASSED = [("tests/test_a.py::test_one", "passed", None)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def late_server() -> Iterator[Callable[[int], HTTPServer]]:
    """Start an HTTP server on a given port later in the test (connection refused until then)."""
    started: list[HTTPServer] = []

    def start(port: int) -> HTTPServer:
        server = HTTPServer(host="127.0.0.1", port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.is_running():
            server.stop()


class TestOutage:
    def test_outage_then_recovery_delivers_exactly_once_across_restart(
        self, make_harness: Callable[..., Harness], late_server: Callable[[int], HTTPServer]
    ) -> None:
        """Refused, then (after a restart) 500, 500, 429 Retry-After: 1, then one delivery."""
        port = free_port()
        alerts = {"webhooks": [{"name": "hook", "url": f"http://127.0.0.1:{port}/hook"}]}
        first = make_harness(alerts)
        first.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        first.worker.start()
        wait_for(lambda: first.rows()[0].attempts >= 3, 10, "3 refused attempts")
        first.worker.stop()
        refused = first.rows()[0]
        assert refused.state == "pending" and "connection failed" in (refused.last_error or "")

        server = late_server(port)
        receiver = Recorder([(500, {}), (500, {}), (429, {"Retry-After": "1"})])
        server.expect_request("/hook", method="POST").respond_with_handler(receiver)
        server.start()
        second = make_harness(alerts, store=Store(first.config.db_path))
        second.worker.start()
        wait_for(lambda: second.rows()[0].state == "sent", 10, "the row sent")
        second.worker.stop()  # joins the lane: nothing is in flight after this

        assert len(receiver.requests) == 4
        assert second.worker.run_once() == 0, "a sent row is never tried again"
        assert len(receiver.requests) == 4
        ids = {headers["X-Schedctl-Alert-Id"] for _, headers, _ in receiver.requests}
        assert ids == {refused.id}
        assert receiver.requests[3][0] - receiver.requests[2][0] >= 1.0
        row = second.rows()[0]
        assert row.attempts == refused.attempts + 4 and row.last_error is None

    def test_crash_after_claim_is_redelivered_with_same_id(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """A row left 'sending' by a dead worker is sent again after its lease, same alert id."""
        receiver = Recorder()
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        alerts = {"webhooks": [{"name": "hook", "url": httpserver.url_for("/hook")}]}
        clock = FakeClock()
        h = make_harness(alerts, settings=replace(FAST, lease_s=0.3), clock=clock)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        dead_worker = Outbox(h.store, lease_s=0.3, clock=clock)
        claim = dead_worker.claim(dead_worker.due()[0])
        assert claim is not None
        assert h.worker.run_once() == 0  # leased: nobody else may take it
        clock.advance(0.29)
        assert h.worker.run_once() == 0  # still leased just before the lease runs out
        clock.advance(0.02)
        h.deliver()
        assert len(receiver.requests) == 1
        assert receiver.requests[0][1]["X-Schedctl-Alert-Id"] == claim.row.id
        assert not dead_worker.complete(claim)  # the dead worker's token is stale now
        assert h.rows()[0].attempts == 2

    def test_permanent_client_error_goes_dead(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """A 404 is not retried: the row is dead after one attempt and the error is logged."""
        receiver = Recorder([(404, {})] * 5)
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        h = make_harness({"webhooks": [{"name": "hook", "url": httpserver.url_for("/hook")}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        with capture_logs() as logs:
            h.deliver()
        row = h.rows()[0]
        assert (row.state, row.attempts, len(receiver.requests)) == ("dead", 1, 1)
        assert "HTTP 404" in (row.last_error or "")
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["alert_delivery_dead"]

    def test_rate_limit_pauses_the_whole_sink(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """After a 429 with Retry-After: 1 no other alert goes to that sink for a second."""
        receiver = Recorder([(429, {"Retry-After": "1"})])
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        h = make_harness(
            {"webhooks": [{"name": "hook", "url": httpserver.url_for("/hook")}]},
            tiers=("hourly", "daily"),
        )
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("daily", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        times = [t for t, _, _ in receiver.requests]
        assert len(times) == 3
        assert times[1] - times[0] >= 1.0

    def test_resolve_never_overtakes_its_fire(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """While a fire is in backoff, the later resolve of the same fingerprint waits."""
        receiver = Recorder([(503, {}), (503, {})])
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        h = make_harness({"webhooks": [{"name": "hook", "url": httpserver.url_for("/hook")}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.PASSED, PASSED)
        h.deliver()
        assert [b["action"] for b in receiver.bodies()] == ["fire", "fire", "fire", "resolve"]


class TestGitHubLimits:
    def test_secondary_rate_limit_is_retried_without_duplicates(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """A 403 secondary rate limit with Retry-After delays the write; one issue results."""
        github.fail_writes.append(
            (403, {"Retry-After": "1"}, "You have exceeded a secondary rate limit")
        )
        h = make_harness({"github": [{"repo": REPO, "api_url": github.api_url}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        started = time.monotonic()
        h.deliver()
        assert time.monotonic() - started >= 1.0
        assert len(github.issues) == 1
        row = h.rows()[0]
        assert (row.state, row.attempts) == ("sent", 2)

    def test_primary_rate_limit_waits_for_reset(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """403 with x-ratelimit-remaining: 0 is retried after x-ratelimit-reset, not dropped."""
        reset = str(int(time.time()))
        github.fail_writes.append(
            (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, "API rate limit")
        )
        h = make_harness({"github": [{"repo": REPO, "api_url": github.api_url}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(github.issues) == 1
        assert h.rows()[0].attempts == 2

    def test_bad_token_is_permanent(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """A 401 from GitHub kills the delivery instead of retrying forever."""
        h = make_harness(
            {"github": [{"repo": REPO, "api_url": github.api_url}]},
            env={"SCHEDCTL_GITHUB_TOKEN": "wrong"},
        )
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        row = h.rows()[0]
        assert (row.state, row.attempts) == ("dead", 1)
        assert github.issues == {}

    def test_retried_comment_is_not_posted_twice(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """Comment posted, then the close fails: the retry finds its marker and only closes."""
        h = make_harness({"github": [{"repo": REPO, "api_url": github.api_url}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        h.finish("hourly", Outcome.PASSED, PASSED)
        github.fail_writes.extend([None, (502, {}, "bad gateway")])  # comment ok, PATCH fails
        h.deliver()
        issue = github.issues[1]
        assert issue.state == "closed"
        assert len(issue.comments) == 1 and "Recovered" in issue.comments[0]
