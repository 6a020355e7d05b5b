"""Alert test harness: runs written to a real store, real loopback HTTP sinks, a fake GitHub API."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.alerts.build import SinkSet, build_sinks
from scheduler.alerts.outbox import Outbox
from scheduler.alerts.recorder import AlertRecorder
from scheduler.alerts.retry import Backoff
from scheduler.alerts.rules import RulePolicy
from scheduler.alerts.worker import DeliveryWorker, WorkerSettings
from scheduler.config import Config
from scheduler.kernel.clock import utcnow
from scheduler.kernel.events import RunFinished
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord, Store, TestResultRow
from tests.waiting import wait_for

GITHUB_TOKEN = "ghp_TESTTOKEN0123456789abcdefSECRET"
WEBHOOK_SECRET = "whsec-TESTSECRET-4f1c2a"
SLACK_PATH = "/services/T000/B000/SLACKSECRETPATH42"
REPO = "acme/widgets"

FAST = WorkerSettings(
    poll_s=0.05,
    lease_s=5.0,
    stop_timeout_s=5.0,
    backoff=Backoff(base_s=0.05, factor=2.0, max_s=0.2, max_attempts=50),
)


# -- fake GitHub ---------------------------------------------------------------------------------


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str
    labels: list[str]
    state: str = "open"
    state_reason: str | None = None
    comments: list[str] = field(default_factory=list)

    def api(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "body": self.body,
            "state": self.state,
            "state_reason": self.state_reason,
            "labels": [{"name": n} for n in self.labels],
        }


class FakeGitHub:
    """Just enough of the GitHub REST API (issues, comments, labels) on a loopback server."""

    PREFIX = "/gh"

    def __init__(self, server: HTTPServer, token: str = GITHUB_TOKEN) -> None:
        self.server = server
        self.token = token
        self.issues: dict[int, FakeIssue] = {}
        self.writes: list[tuple[float, str, str]] = []
        self.fail_writes: list[tuple[int, dict[str, str], str] | None] = []
        self.lock = threading.Lock()
        server.expect_request(re.compile(rf"^{self.PREFIX}/.*")).respond_with_handler(self.handle)

    @property
    def api_url(self) -> str:
        return self.server.url_for(self.PREFIX)

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"message": "Bad credentials"}, 401)
        path = request.path.removeprefix(f"{self.PREFIX}/repos/{REPO}")
        with self.lock:
            if request.method != "GET":
                self.writes.append((time.monotonic(), request.method, path))
                failure = self.fail_writes.pop(0) if self.fail_writes else None
                if failure is not None:
                    status, headers, text = failure
                    return Response(text, status=status, headers=headers)
            return self.route(request, path)

    def route(self, request: Request, path: str) -> Response:
        body = request.get_json(silent=True) or {}
        if path == "":
            return _json({"has_issues": True, "permissions": {"push": True, "triage": True}})
        if path == "/issues" and request.method == "GET":
            return _json([i.api() for i in self._list(request.args)])
        if path == "/issues" and request.method == "POST":
            number = len(self.issues) + 1
            self.issues[number] = FakeIssue(number, body["title"], body["body"], body["labels"])
            return _json(self.issues[number].api(), 201)
        match = re.fullmatch(r"/issues/(\d+)(/comments|/labels|/labels/(.+))?", path)
        if not match or int(match.group(1)) not in self.issues:
            return _json({"message": "Not Found"}, 404)
        issue = self.issues[int(match.group(1))]
        tail = match.group(2)
        if tail is None and request.method == "GET":
            return _json(issue.api())
        if tail is None and request.method == "PATCH":
            issue.state = body.get("state", issue.state)
            issue.state_reason = body.get("state_reason")
            return _json(issue.api())
        if tail == "/comments" and request.method == "POST":
            issue.comments.append(body["body"])
            return _json({"id": len(issue.comments), "body": body["body"]}, 201)
        if tail == "/comments":
            return _json([{"body": c} for c in issue.comments])
        if tail == "/labels" and request.method == "POST":
            issue.labels += [n for n in body["labels"] if n not in issue.labels]
            return _json([{"name": n} for n in issue.labels])
        if match.group(3) and request.method == "DELETE":
            name = match.group(3)
            if name not in issue.labels:
                return _json({"message": "Label does not exist"}, 404)
            issue.labels.remove(name)
            return _json([{"name": n} for n in issue.labels])
        return _json({"message": "unsupported"}, 405)

    def _list(self, args: Any) -> list[FakeIssue]:
        wanted = [n for n in args.get("labels", "").split(",") if n]
        found = [i for i in self.issues.values() if all(n in i.labels for n in wanted)]
        if args.get("state", "open") != "all":
            found = [i for i in found if i.state == args.get("state", "open")]
        return sorted(found, key=lambda i: -i.number)

    def issue_for(self, fingerprint: str) -> list[FakeIssue]:
        marker = f"<!-- schedctl:fingerprint={fingerprint} -->"
        return [i for i in self.issues.values() if marker in i.body]


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json")


# -- webhook receiver ----------------------------------------------------------------------------


class Recorder:
    """Collects requests a loopback endpoint received, answering from a script of statuses."""

    def __init__(self, script: Sequence[tuple[int, dict[str, str]]] = ()) -> None:
        self.script = list(script)
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests.append((time.monotonic(), dict(request.headers), request.get_data()))
            status, headers = self.script.pop(0) if self.script else (200, {})
        return Response("ok" if status < 400 else "nope", status=status, headers=headers)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, _, body in self.requests]


# -- harness -------------------------------------------------------------------------------------


@dataclass
class Harness:
    """A store, the recorder and a worker wired the way ``build_alerting`` wires them."""

    config: Config
    store: Store
    sinks: SinkSet
    recorder: AlertRecorder
    worker: DeliveryWorker
    session: requests.Session

    def finish(
        self,
        tier: str,
        outcome: Outcome,
        tests: Sequence[tuple[str, str, str | None]] = (),
        sha: str | None = "a" * 40,
    ) -> RunRecord:
        """Write a finished run (as the dispatcher does) and hand its event to the recorder."""
        now = datetime.now(timezone.utc)
        run_id = self.store.create_run(
            tier=tier, kind="pytest", trigger="schedule", outcome=Outcome.RUNNING, host="gpu-1"
        )
        assert run_id is not None
        record = self.store.finish_run(
            run_id,
            [TestResultRow(nodeid, out, 0.1, "", msg) for nodeid, out, msg in tests],
            outcome=outcome,
            sha=sha,
            source={"subject": "Make widgets faster", "author": "dev"},
            counts={"failed": sum(1 for _, o, _ in tests if o == "failed")},
            reason=f"{outcome.value} in test",
            started_at=now,
            duration_s=1.0,
        )
        self.recorder(RunFinished(run_id, tier, "schedule", outcome, 1.0, {}, now, record))
        return record

    def deliver(self, timeout_s: float = 10.0) -> None:
        """Run the worker in this thread until nothing is left to send."""
        outbox = Outbox(self.store)

        def idle() -> bool:
            self.worker.run_once()
            return not outbox.rows(["pending", "sending"])

        wait_for(idle, timeout_s, "an empty outbox")

    def rows(self, **filters: str) -> list[Any]:
        rows = Outbox(self.store).rows(None, 1000)
        return [r for r in rows if all(getattr(r, k) == v for k, v in filters.items())]


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def github(httpserver: HTTPServer) -> FakeGitHub:
    return FakeGitHub(httpserver)


@pytest.fixture
def make_harness(
    make_config: Callable[..., Config], session: requests.Session, tmp_path: Path
) -> Iterator[Callable[..., Harness]]:
    """Build a Harness from an ``alerts:`` mapping (secrets come from a test env)."""
    made: list[Harness] = []

    def make(
        alerts: dict[str, Any],
        *,
        tiers: Sequence[str] = ("hourly",),
        env: dict[str, str] | None = None,
        settings: WorkerSettings = FAST,
        store: Store | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Harness:
        tier_cfg = {"schedule": "15 * * * *", "timeout": 60, "markers": "hourly"}
        config = make_config(tiers={t: dict(tier_cfg) for t in tiers}, alerts=alerts)
        the_env = {
            "SCHEDCTL_GITHUB_TOKEN": GITHUB_TOKEN,
            "HOOK_SECRET": WEBHOOK_SECRET,
            **(env or {}),
        }
        sinks = build_sinks(
            config.alerts, session=session, env=the_env, github_write_interval_s=0.01, clock=clock
        )
        the_store = store or Store(config.db_path)
        worker = DeliveryWorker(the_store, sinks.sinks, settings=settings, clock=clock)
        recorder = AlertRecorder(
            the_store,
            sinks.sinks,
            policy=RulePolicy(
                escalate_after=config.alerts.escalation.after_consecutive_failures,
                resolve_after_green=config.alerts.resolve_after_green,
            ),
            public_url=config.alerts.public_url,
            on_enqueued=worker.wake,
            clock=clock,
        )
        harness = Harness(config, the_store, sinks, recorder, worker, session)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.worker.stop()


FAILED_TESTS = [
    (
        "tests/test_a.py::test_one",
        "failed",
        "def test_one():\n>   assert 1 == 2\nE   assert 1 == 2",
    ),
    ("tests/test_a.py::test_two", "failed", "E   ValueError: bad widget\nE   more"),
    ("tests/test_a.py::test_ok", "passed", None),
]
