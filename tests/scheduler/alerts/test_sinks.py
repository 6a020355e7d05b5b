"""Sink details: Slack blocks, unsigned webhooks, GitHub write spacing, filters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import requests
from pytest_httpserver import HTTPServer

from scheduler.alerts.payload import Alert, FailingTest, RunFacts, first_error_line
from scheduler.alerts.secrets import Secret
from scheduler.alerts.sinks.base import Delivery
from scheduler.alerts.sinks.github import GitHubSink
from scheduler.alerts.sinks.http import HttpClient
from scheduler.alerts.sinks.slack import slack_message
from scheduler.kernel.outcome import Outcome
from tests.scheduler.alerts.conftest import (
    FAILED_TESTS,
    GITHUB_TOKEN,
    REPO,
    SLACK_PATH,
    FakeGitHub,
    Harness,
    Recorder,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def make_alert(action: str = "fire", severity: str = "warning", state: str = "firing") -> Alert:
    facts = RunFacts(
        run_id=42,
        outcome="failed",
        sha="c" * 40,
        subject="Speed up <widgets> & gadgets",
        failing=(FailingTest("tests/t.py::test_a", "failed", "assert 1 == 2"),),
        failing_total=30,
        last_green_run_id=40,
        changes_since_green=("abc1234 Speed up widgets",),
    )
    return Alert(
        fingerprint="hourly/tests-failed",
        tier="hourly",
        failure_class="tests-failed",
        action=action,
        state=state,
        severity=severity,
        created_at=NOW.isoformat(),
        run=facts,
        consecutive=3,
        show_command="schedctl show 42",
        url="https://ci.example.org/runs/42",
    )


class TestPayload:
    def test_first_error_line_prefers_pytest_e_lines(self) -> None:
        """The first 'E' line wins; otherwise the first non-blank line; long lines are cut."""
        assert first_error_line(">   x()\nE   KeyError: 'k'\nE   other") == "KeyError: 'k'"
        assert first_error_line("\n  Timeout after 30s\n") == "Timeout after 30s"
        assert first_error_line(None) == ""
        assert len(first_error_line("E " + "x" * 1000)) == 240

    def test_alert_round_trips_through_json(self) -> None:
        """What the outbox stores is read back into an equal Alert."""
        alert = make_alert()
        assert Alert.from_json(alert.to_json()) == alert


class TestSlack:
    def test_blocks_are_readable_and_escaped(self) -> None:
        """Header, summary, fields, failing tests, changes and the show command, escaped."""
        message = slack_message(make_alert())
        text = repr(message)
        assert message["text"].startswith("hourly tier failing")
        assert message["blocks"][0]["type"] == "header"
        assert "&lt;widgets&gt; &amp; gadgets" in text and "<widgets>" not in text
        assert "`tests/t.py::test_a`" in text and "assert 1 == 2" in text
        assert "… and 29 more" in text
        assert "abc1234 Speed up widgets" in text
        assert "`schedctl show 42` · <https://ci.example.org/runs/42|open run>" in text

    def test_resolved_message_drops_failure_details(self) -> None:
        """A recovery message does not list the old failing tests."""
        text = repr(slack_message(make_alert("resolve", state="resolved")))
        assert "recovered" in text and "test_a" not in text

    def test_slack_hears_repeats_only_when_failing_set_changes(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """Slack gets fire and a changed repeat, not an identical repeat."""
        receiver = Recorder()
        httpserver.expect_request(SLACK_PATH).respond_with_handler(receiver)
        h = make_harness(
            {"slack": [{"url_env": "SLACK_URL"}]},
            env={"SLACK_URL": httpserver.url_for(SLACK_PATH)},
        )
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS[:1])
        h.deliver()
        assert [b["text"].split(":")[0] for b in receiver.bodies()] == [
            "hourly tier failing",
            "hourly tier failing 3 runs in a row",
        ]


class TestWebhook:
    def test_url_from_env_is_never_shown(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """A webhook URL carrying a token comes from the env and stays out of repr and status."""
        receiver = Recorder()
        httpserver.expect_request("/hook/t0ken-123").respond_with_handler(receiver)
        h = make_harness(
            {"webhooks": [{"name": "hook", "url_env": "HOOK_URL"}]},
            env={"HOOK_URL": httpserver.url_for("/hook/t0ken-123")},
        )
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(receiver.requests) == 1
        (sink,) = h.sinks.sinks
        assert "t0ken-123" not in repr(sink) and "t0ken-123" not in sink.target

    def test_webhook_needs_exactly_one_url_source(self) -> None:
        """url, url_env and url_file are alternatives: none or two is a config error."""
        from pydantic import ValidationError

        from scheduler.config import WebhookSink as WebhookConfig

        with pytest.raises(ValidationError, match="exactly one of url, url_env or url_file"):
            WebhookConfig(name="x")
        with pytest.raises(ValidationError, match="exactly one of url, url_env or url_file"):
            WebhookConfig(name="x", url="https://h.example/x", url_env="HOOK_URL")

    def test_unsigned_without_secret(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """No secret configured: no signature header, still an alert id header."""
        receiver = Recorder()
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        h = make_harness({"webhooks": [{"name": "hook", "url": httpserver.url_for("/hook")}]})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        [(_, headers, _)] = receiver.requests
        assert "X-Schedctl-Signature" not in headers
        assert headers["X-Schedctl-Event"] == "fire" and headers["X-Schedctl-Alert-Id"]

    def test_severity_filter(
        self, httpserver: HTTPServer, make_harness: Callable[..., Harness]
    ) -> None:
        """A critical-only sink first hears about a failure at its escalation."""
        receiver = Recorder()
        httpserver.expect_request("/hook").respond_with_handler(receiver)
        url = httpserver.url_for("/hook")
        h = make_harness({"webhooks": [{"url": url, "severities": ["critical"]}]})
        for _ in range(3):
            h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.PASSED, [])
        h.deliver()
        assert [b["action"] for b in receiver.bodies()] == ["escalate", "resolve"]


class TestGitHubPacing:
    def test_writes_are_spaced_by_the_interval(
        self, httpserver: HTTPServer, github: FakeGitHub
    ) -> None:
        """Consecutive writes sleep until write_interval_s has passed since the last one."""
        clock = [100.0]
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            clock[0] += seconds

        sink = GitHubSink(
            "github",
            REPO,
            HttpClient(requests.Session(), "github"),
            token=Secret(GITHUB_TOKEN),
            api_url=github.api_url,
            write_interval_s=1.0,
            monotonic=lambda: clock[0],
            sleep=sleep,
        )
        external = sink.deliver(make_alert(severity="critical"), Delivery("d1"))
        assert external is not None and external["issue"] == 1
        clock[0] += 0.25
        sink.deliver(make_alert("resolve", state="resolved"), Delivery("d2", external=external))
        assert [m for _, m, _ in github.writes] == ["POST", "POST", "DELETE", "PATCH"]
        assert sleeps == [0.75, 1.0, 1.0]

    def test_send_test_checks_access_without_writing(
        self, httpserver: HTTPServer, github: FakeGitHub
    ) -> None:
        """`alerts test github` reads the repo permissions and opens no issue."""
        sink = GitHubSink(
            "github",
            REPO,
            HttpClient(requests.Session(), "github"),
            token=Secret(GITHUB_TOKEN),
            api_url=github.api_url,
        )
        assert "can manage issues" in sink.send_test(make_alert("test"))
        assert github.writes == []
