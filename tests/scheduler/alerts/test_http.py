"""Retry timing and the requests boundary: which answers retry, when, and which are final."""

from __future__ import annotations

import random
import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests
from pytest_httpserver import HTTPServer

from scheduler.alerts.retry import Backoff, parse_reset_epoch, parse_retry_after
from scheduler.alerts.sinks.http import HttpClient
from scheduler.kernel.errors import AlertError

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


class TestRetryTiming:
    def test_retry_after_seconds_and_http_date(self) -> None:
        """Retry-After is read as delta-seconds or as an HTTP date; junk is ignored."""
        assert parse_retry_after("7", NOW) == 7.0
        assert (
            parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW)
            == 90.0
        )
        assert (
            parse_retry_after(format_datetime(NOW - timedelta(seconds=5), usegmt=True), NOW) == 0.0
        )
        assert parse_retry_after("soon", NOW) is None
        assert parse_retry_after(None, NOW) is None

    def test_ratelimit_reset_epoch(self) -> None:
        """x-ratelimit-reset is an epoch; the wait is until then plus a second."""
        assert parse_reset_epoch(str(int(NOW.timestamp()) + 30), NOW) == 31.0
        assert parse_reset_epoch("x", NOW) is None

    def test_backoff_grows_with_jitter_and_caps(self) -> None:
        """Delays double per attempt within [d/2, d] and never pass the cap."""
        backoff = Backoff(base_s=1, factor=2, max_s=10, rng=random.Random(7))
        for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
            delays = {backoff.delay(attempt) for _ in range(20)}
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(delays) > 1

    def test_server_delay_wins_over_backoff(self) -> None:
        """With a Retry-After the wait is the server's (plus at most 10 % jitter)."""
        backoff = Backoff(base_s=100, rng=random.Random(1))
        assert 2.0 <= backoff.delay(5, retry_after_s=2.0) <= 2.2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def client() -> HttpClient:
    return HttpClient(requests.Session(), "test sink", timeout_s=2, clock=lambda: NOW)


def _error(client: HttpClient, url: str) -> AlertError:
    with pytest.raises(AlertError) as info:
        client.request("POST", url, json={})
    return info.value


class TestClassification:
    @pytest.mark.parametrize("status", [408, 500, 502, 503])
    def test_server_errors_are_transient(
        self, httpserver: HTTPServer, client: HttpClient, status: int
    ) -> None:
        """408 and 5xx are retried, honouring Retry-After when given."""
        httpserver.expect_request("/x").respond_with_data("busy", status, {"Retry-After": "3"})
        exc = _error(client, httpserver.url_for("/x"))
        assert not exc.permanent and exc.retry_after_s == 3.0
        assert f"HTTP {status}: busy" in str(exc)

    @pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
    def test_client_errors_are_permanent(
        self, httpserver: HTTPServer, client: HttpClient, status: int
    ) -> None:
        """Other 4xx are final."""
        httpserver.expect_request("/x").respond_with_data("no", status)
        assert _error(client, httpserver.url_for("/x")).permanent

    def test_429_without_header_is_transient(
        self, httpserver: HTTPServer, client: HttpClient
    ) -> None:
        """A bare 429 retries on the normal backoff."""
        httpserver.expect_request("/x").respond_with_data("slow down", 429)
        exc = _error(client, httpserver.url_for("/x"))
        assert (exc.permanent, exc.retry_after_s) == (False, None)

    def test_github_secondary_limit_without_headers(
        self, httpserver: HTTPServer, client: HttpClient
    ) -> None:
        """403 saying 'secondary rate limit' waits a minute, as GitHub documents."""
        httpserver.expect_request("/x").respond_with_data(
            '{"message": "You have exceeded a secondary rate limit"}', 403
        )
        exc = _error(client, httpserver.url_for("/x"))
        assert (exc.permanent, exc.retry_after_s) == (False, 60.0)

    def test_github_primary_limit_uses_reset(
        self, httpserver: HTTPServer, client: HttpClient
    ) -> None:
        """403 with x-ratelimit-remaining: 0 waits until x-ratelimit-reset."""
        reset = str(int(NOW.timestamp()) + 120)
        httpserver.expect_request("/x").respond_with_data(
            "limit", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
        )
        exc = _error(client, httpserver.url_for("/x"))
        assert (exc.permanent, exc.retry_after_s) == (False, 121.0)

    def test_plain_403_is_permanent(self, httpserver: HTTPServer, client: HttpClient) -> None:
        """A 403 that is not a rate limit (missing permission) is final."""
        httpserver.expect_request("/x").respond_with_data("Resource not accessible", 403)
        assert _error(client, httpserver.url_for("/x")).permanent

    def test_redirects_are_not_followed(self, httpserver: HTTPServer, client: HttpClient) -> None:
        """A redirect (which would re-send a signed body elsewhere) is a permanent error."""
        httpserver.expect_request("/x").respond_with_data("", 302, {"Location": "/y"})
        assert _error(client, httpserver.url_for("/x")).permanent

    def test_connection_refused_hides_the_url(self, client: HttpClient) -> None:
        """Refused connections are transient and the message names the target, not the URL."""
        url = f"http://127.0.0.1:{_closed_port()}/services/SECRETPATH"
        exc = _error(client, url)
        assert not exc.permanent
        assert str(exc) == "test sink: connection failed"
        assert exc.__cause__ is None and exc.__suppress_context__


def test_non_json_answer_is_an_alert_error(httpserver: HTTPServer) -> None:
    """A 200 whose body is not JSON (a proxy's page) is an AlertError naming the target."""
    httpserver.expect_request("/issues").respond_with_data("<html>gateway</html>", status=200)
    client = HttpClient(requests.Session(), "github acme/widgets")
    response = client.request("GET", httpserver.url_for("/issues"))
    with pytest.raises(AlertError, match=r"github acme/widgets: HTTP 200 answer is not JSON"):
        client.json_body(response)
