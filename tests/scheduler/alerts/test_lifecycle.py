"""End to end on loopback: runs -> recorder -> outbox -> worker -> webhook and a fake GitHub."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runners.fake import FakeBehaviour, FakeRunner
from scheduler.alerts.build import build_alerting
from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import Store
from tests.scheduler.alerts.conftest import (
    FAILED_TESTS,
    GITHUB_TOKEN,
    REPO,
    WEBHOOK_SECRET,
    FakeGitHub,
    Harness,
    Recorder,
)
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for

PASSED = [("tests/test_a.py::test_one", "passed", None)]


def sinks_config(server: HTTPServer, github: FakeGitHub, **extra: Any) -> dict[str, Any]:
    return {
        "public_url": "https://ci.example.org",
        "webhooks": [{"name": "hook", "url": server.url_for("/hook"), "secret_env": "HOOK_SECRET"}],
        "github": [{"repo": REPO, "api_url": github.api_url}],
        **extra,
    }


def hook(server: HTTPServer) -> Recorder:
    receiver = Recorder()
    server.expect_request("/hook", method="POST").respond_with_handler(receiver)
    return receiver


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Recorder:
    """The webhook's receiver on the loopback server."""
    return hook(httpserver)


@pytest.fixture
def h(httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]) -> Harness:
    """A harness whose sinks are the loopback webhook and the fake GitHub."""
    return make_harness(sinks_config(httpserver, github))


class TestFiring:
    def test_failure_sends_one_signed_webhook(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """A failed run reaches the webhook once, HMAC-signed over the exact body bytes."""
        record = h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(receiver.requests) == 1
        _, headers, raw = receiver.requests[0]
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Schedctl-Signature"], expected)
        body = receiver.bodies()[0]
        assert headers["X-Schedctl-Alert-Id"] == body["id"]
        assert (body["tier"], body["outcome"], body["run_id"]) == ("hourly", "failed", record.id)
        assert (body["state"], body["severity"], body["action"]) == ("firing", "warning", "fire")
        assert body["sha"] == "a" * 40
        assert body["show_command"] == f"schedctl show {record.id}"
        assert body["url"] == f"https://ci.example.org/runs/{record.id}"
        assert body["failing"] == [
            {
                "nodeid": "tests/test_a.py::test_one",
                "outcome": "failed",
                "error": "assert 1 == 2",
                "owner": "",
            },
            {
                "nodeid": "tests/test_a.py::test_two",
                "outcome": "failed",
                "error": "ValueError: bad widget",
                "owner": "",
            },
        ]
        issues = github.issue_for("hourly/tests-failed")
        assert len(issues) == 1
        assert issues[0].labels == ["test-failure", "automated"]
        assert "tests/test_a.py::test_one" in issues[0].body

    def test_second_identical_failure_opens_no_duplicate(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """The same failing set again: same issue, no comment, no second webhook."""
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(github.issues) == 1
        assert github.issues[1].comments == []
        assert [b["action"] for b in receiver.bodies()] == ["fire"]

    def test_changed_failing_set_comments(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """A repeat whose failing set changed adds one comment and one webhook."""
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.FAILED, [("tests/test_b.py::test_new", "failed", "E boom")])
        h.deliver()
        assert len(github.issues) == 1
        assert len(github.issues[1].comments) == 1
        assert "tests/test_b.py::test_new" in github.issues[1].comments[0]
        assert [b["action"] for b in receiver.bodies()] == ["fire", "repeat"]

    def test_third_consecutive_failure_escalates(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """Run 3 of a streak escalates: critical webhook, high-priority label, one comment."""
        for _ in range(3):
            h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
            h.deliver()
        bodies = receiver.bodies()
        assert [(b["action"], b["severity"]) for b in bodies] == [
            ("fire", "warning"),
            ("escalate", "critical"),
        ]
        assert bodies[1]["consecutive_failures"] == 3
        issue = github.issues[1]
        assert "high-priority" in issue.labels
        assert len(github.issues) == 1 and len(issue.comments) == 1
        assert "Escalated to critical" in issue.comments[0]

    def test_timeouts_count_in_the_streak(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """failed, timeout, failed is three failures in a row; an infra error in between is not."""
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.TIMEOUT)
        h.finish("hourly", Outcome.INFRA_ERROR)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        tests_failed = [b for b in receiver.bodies() if b["failure_class"] == "tests-failed"]
        assert [(b["action"], b["consecutive_failures"]) for b in tests_failed] == [
            ("fire", 1),
            ("escalate", 3),
        ]


class TestRecovery:
    def test_green_resolves_and_closes_issue(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """A green run sends a resolved webhook and closes the issue with a comment."""
        for _ in range(3):
            h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        green = h.finish("hourly", Outcome.PASSED, PASSED, sha="b" * 40)
        h.deliver()
        resolved = receiver.bodies()[-1]
        assert (resolved["action"], resolved["state"]) == ("resolve", "resolved")
        assert resolved["run_id"] == green.id
        issue = github.issues[1]
        assert (issue.state, issue.state_reason) == ("closed", "completed")
        assert "Recovered" in issue.comments[-1]
        assert "high-priority" not in issue.labels

    def test_resolve_waits_for_k_greens(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """With resolve_after_green: 2 one green run is not enough to close."""
        receiver = hook(httpserver)
        h = make_harness(sinks_config(httpserver, github, resolve_after_green=2))
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.PASSED, PASSED)
        h.deliver()
        assert github.issues[1].state == "open"
        h.finish("hourly", Outcome.PASSED, PASSED)
        h.deliver()
        assert github.issues[1].state == "closed"
        assert [b["action"] for b in receiver.bodies()] == ["fire", "resolve"]

    def test_relapse_reopens_the_issue(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """Failing after recovery reopens the same issue instead of opening a new one."""
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("hourly", Outcome.PASSED, PASSED)
        h.deliver()
        assert github.issues[1].state == "closed"
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(github.issues) == 1
        issue = github.issues[1]
        assert issue.state == "open"
        assert "Failing again" in issue.comments[-1]
        assert receiver.bodies()[-1]["relapse"] is True

    @pytest.mark.parametrize("labels_removed", [False, True], ids=["labelled", "labels-removed"])
    def test_issue_found_again_by_marker_without_state(
        self,
        httpserver: HTTPServer,
        github: FakeGitHub,
        make_harness: Callable[..., Harness],
        tmp_path: Path,
        labels_removed: bool,
    ) -> None:
        """A fresh state dir (lost SQLite) finds the issue by its hidden marker, labels or not."""
        hook(httpserver)
        first = make_harness(sinks_config(httpserver, github))
        first.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        first.deliver()
        if labels_removed:
            github.issues[1].labels = []
        second = make_harness(
            sinks_config(httpserver, github), store=Store(tmp_path / "other" / "schedctl.db")
        )
        second.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        second.deliver()
        assert len(github.issues) == 1
        assert len(github.issues[1].comments) == 1


class TestFingerprints:
    def test_two_tiers_two_issues(
        self, httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
    ) -> None:
        """Each tier's failures get their own issue."""
        h = make_harness(sinks_config(httpserver, github), tiers=("hourly", "daily"))
        hook(httpserver)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.finish("daily", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        assert len(github.issues) == 2
        assert len(github.issue_for("hourly/tests-failed")) == 1
        assert len(github.issue_for("daily/tests-failed")) == 1
        titles = sorted(i.title for i in github.issues.values())
        assert titles == ["[schedctl] daily: tests failing", "[schedctl] hourly: tests failing"]

    def test_infra_outcome_alerts_as_infra(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """infra-error alerts as class infra, with its own fingerprint, never as a test failure."""
        h.finish("hourly", Outcome.INFRA_ERROR)
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
        bodies = receiver.bodies()
        assert [(b["fingerprint"], b["action"]) for b in bodies] == [
            ("hourly/infra", "fire"),
            ("hourly/tests-failed", "fire"),
            ("hourly/infra", "resolve"),
        ]
        assert bodies[0]["failure_class"] == "infra" and bodies[0]["failing"] == []
        assert github.issue_for("hourly/infra")[0].state == "closed"
        assert github.issue_for("hourly/tests-failed")[0].state == "open"

    def test_cancelled_and_skipped_never_alert(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """Cancelled and skipped-overlap runs write no alert state and send nothing."""
        h.finish("hourly", Outcome.CANCELLED)
        h.finish("hourly", Outcome.SKIPPED_OVERLAP)
        h.deliver()
        assert h.rows() == []
        assert receiver.requests == [] and github.issues == {}

    def test_dispatcher_events_drive_alerts(
        self,
        httpserver: HTTPServer,
        github: FakeGitHub,
        make_config: Callable[..., Config],
        fake_dispatcher: FakeDispatcher,
    ) -> None:
        """build_alerting's recorder on a real Dispatcher with a FakeRunner: fail, then recover."""
        receiver = hook(httpserver)
        config = make_config(alerts=sinks_config(httpserver, github))
        store = Store(config.db_path)
        env = {"SCHEDCTL_GITHUB_TOKEN": GITHUB_TOKEN, "HOOK_SECRET": WEBHOOK_SECRET}
        alerting = build_alerting(config, store, env=env)
        assert alerting is not None
        outcomes = iter([(1, "failed"), (0, "passed")])

        def handler(_spec: Any) -> FakeBehaviour:
            code, result = next(outcomes)
            return FakeBehaviour(exit_code=code, tests=[("t.py::test_x", result)])

        runner = FakeRunner(handler)
        dispatcher = fake_dispatcher(config, runner, store=store, listeners=[alerting.recorder])
        alerting.worker.start()
        try:
            dispatcher.run(RunRequest("hourly"))
            wait_for(lambda: len(github.issues) == 1, 10, "one GitHub issue")
            dispatcher.run(RunRequest("hourly"))
            wait_for(lambda: github.issues[1].state == "closed", 10, "the issue closed")
            wait_for(lambda: len(receiver.requests) == 2, 10, "fire and resolve at the hook")
        finally:
            alerting.worker.stop()
        assert [b["action"] for b in receiver.bodies()] == ["fire", "resolve"]


class TestCatchUp:
    def test_runs_no_listener_saw_alert_once(
        self, receiver: Recorder, h: Harness, github: FakeGitHub
    ) -> None:
        """A failure recorded without the listener (CLI run, crash) alerts on catch-up, once."""
        assert h.recorder.catch_up() == 0  # first use: the cursor starts at the newest run
        unseen = h.store.create_run(
            tier="hourly",
            kind="pytest",
            trigger="manual",
            outcome=Outcome.FAILED,
            reason="1 failing",
        )
        active = h.store.create_run(tier="daily", kind="pytest", trigger="manual")
        assert unseen is not None and active is not None
        assert h.recorder.catch_up() == 1
        assert h.recorder.catch_up() == 0  # stopped at the active run, applied nothing twice
        h.deliver()
        assert [b["run_id"] for b in receiver.bodies()] == [unseen]
        h.store.finish_run(active, outcome=Outcome.PASSED)
        assert h.recorder.catch_up() == 1
        h.deliver()
        assert len(receiver.requests) == 1
