"""Flaky tests alert as their own low-severity class, named with their owners, never as code.

Runs are written to a real store the way the dispatcher leaves them (final attempts, counts,
owners) and delivered through a real webhook sink to a loopback receiver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from pytest_httpserver import HTTPServer

from scheduler.alerts.rules import FailureClass, Observation, RulePolicy, Track, evaluate
from scheduler.kernel.events import RunFinished
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord, TestResultRow
from tests.scheduler.alerts.conftest import Harness, Recorder

POLICY = RulePolicy(escalate_after=2, resolve_after_green=1)
FLAKE = "tests/env/test_net.py::test_fetch"
FLAKE2 = "tests/io/test_disk.py::test_sync"
BROKEN = "tests/core/test_math.py::test_add"


def _flake(nodeid: str, owner: str) -> list[TestResultRow]:
    return [
        TestResultRow(nodeid, "failed", 0.1, "", "E   boom", attempt=0, final=False, owner=owner),
        TestResultRow(nodeid, "flaky", 0.1, "", None, attempt=1, owner=owner),
    ]


def _finish(h: Harness, outcome: Outcome, results: Sequence[TestResultRow]) -> RunRecord:
    run_id = h.store.create_run(tier="hourly", kind="pytest", trigger="schedule")
    assert run_id is not None
    counts: dict[str, int] = {"passed": 5}
    for r in results:
        if r.final:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
    record = h.store.finish_run(
        run_id, list(results), outcome=outcome, counts=counts, sha="c" * 40, duration_s=1.0
    )
    now = datetime.now(timezone.utc)
    h.recorder(RunFinished(run_id, "hourly", "schedule", outcome, 1.0, {}, now, record))
    return record


def _harness(
    httpserver: HTTPServer, make_harness: Callable[..., Harness]
) -> tuple[Harness, Recorder]:
    receiver = Recorder()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(receiver)
    h = make_harness({"webhooks": [{"name": "lab", "url": httpserver.url_for("/hook")}]})
    return h, receiver


def _sent(h: Harness, receiver: Recorder, already: int) -> list[dict[str, Any]]:
    h.deliver()
    return receiver.bodies()[already:]


def test_passed_run_with_flakes_fires_info_once_names_owners_then_resolves(
    httpserver: HTTPServer, make_harness: Callable[..., Harness]
) -> None:
    """flaky_fails_tier false: the run passed, one info alert names the flakes and owners; the
    next flaky run repeats on the same fingerprint without escalating; a clean run resolves."""
    h, receiver = _harness(httpserver, make_harness)
    _finish(h, Outcome.PASSED, [*_flake(FLAKE, "@lab/net"), *_flake(FLAKE2, "@alice @lab/net")])
    (fired,) = _sent(h, receiver, 0)
    assert (fired["fingerprint"], fired["action"]) == ("hourly/flaky", "fire")
    assert fired["severity"] == "info" and fired["failure_class"] == "flaky"
    assert [f["nodeid"] for f in fired["failing"]] == [FLAKE, FLAKE2]
    assert fired["owners"] == ["@lab/net", "@alice"]
    assert fired["failing_total"] == 2

    for _ in range(4):  # past escalate_after: still info, one fingerprint
        _finish(h, Outcome.PASSED, _flake(FLAKE, "@lab/net"))
    repeats = _sent(h, receiver, 1)
    assert {b["fingerprint"] for b in repeats} <= {"hourly/flaky"}
    assert all(b["severity"] == "info" and b["action"] != "escalate" for b in repeats)

    _finish(h, Outcome.PASSED, [TestResultRow("tests/test_ok.py::test_ok", "passed")])
    resolved = _sent(h, receiver, 1 + len(repeats))
    assert [(b["fingerprint"], b["action"]) for b in resolved] == [("hourly/flaky", "resolve")]
    assert not h.rows(fingerprint="hourly/tests-failed")


def test_failure_caused_only_by_flakes_is_flaky_not_a_code_failure(
    httpserver: HTTPServer, make_harness: Callable[..., Harness]
) -> None:
    """flaky_fails_tier true (run failed, every failure a flake): class flaky at info, no
    tests-failed alert; a real failure alongside a flake alerts both, each naming its tests."""
    h, receiver = _harness(httpserver, make_harness)
    _finish(h, Outcome.FAILED, _flake(FLAKE, "@lab/net"))
    (only,) = _sent(h, receiver, 0)
    assert (only["fingerprint"], only["severity"]) == ("hourly/flaky", "info")
    assert only["owners"] == ["@lab/net"]

    broken = TestResultRow(BROKEN, "failed", 0.1, "", "E   assert 1 == 2", owner="@bob")
    _finish(h, Outcome.FAILED, [broken, *_flake(FLAKE2, "@alice")])
    bodies = {b["fingerprint"]: b for b in _sent(h, receiver, 1)}
    code, flaky = bodies["hourly/tests-failed"], bodies["hourly/flaky"]
    assert code["severity"] == "warning" and [f["nodeid"] for f in code["failing"]] == [BROKEN]
    assert code["owners"] == ["@bob"]
    assert flaky["action"] == "repeat" and [f["nodeid"] for f in flaky["failing"]] == [FLAKE2]
    assert flaky["owners"] == ["@alice"]


def test_rules_infra_outcomes_leave_the_flaky_track_alone() -> None:
    """A timeout or gpu-unavailable run neither resolves nor repeats a firing flaky alert."""
    (fired,) = evaluate({}, Observation(1, "hourly", Outcome.PASSED, flaky=(FLAKE,)), POLICY)
    assert fired.track.failure_class is FailureClass.FLAKY
    tracks: dict[str, Track] = {fired.track.fingerprint: fired.track}
    for run_id, outcome in ((2, Outcome.GPU_UNAVAILABLE), (3, Outcome.TIMEOUT)):
        decisions = evaluate(tracks, Observation(run_id, "hourly", outcome), POLICY)
        assert all(d.track.failure_class is not FailureClass.FLAKY for d in decisions)
