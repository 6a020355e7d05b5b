"""Tests that lie about their results (issue 20, finding 2), with the real local runner.

``os._exit(0)`` mid-suite is covered in test_honest_outcomes.py (``error``, naming the test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scheduler.config import Config
from scheduler.kernel.outcome import Outcome, PytestSession, RunEnding, Termination, decide
from scheduler.run.dispatch import RunRequest
from tests.conftest import tier
from tests.scheduler.run.test_honest_outcomes import local_dispatcher, project

FORGER = """
import json, os

def test_real_failure():
    assert False

def test_forges_passes():
    path = os.environ["SCHEDCTL_RESULTS"]
    nonce = os.environ.get("SCHEDCTL_NONCE")  # removed by the plugin before tests run
    with open(path, "a") as fh:
        for i in range(5):
            line = {"type": "test", "nodeid": f"phantom::{i}", "outcome": "passed", "nonce": nonce}
            fh.write(json.dumps(line) + "\\n")
        fh.write(json.dumps({"type": "session", "exitstatus": 0, "counts": {}}) + "\\n")
        fh.write("[1, 2, 3]\\n")
"""


def test_forged_lines_are_ignored_and_counted(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """Phantom passes and a forged session line appended by a test change nothing: the run is
    failed, with the real counts, and the 7 foreign lines are counted in its details."""
    root = project(tmp_path / "p", {"tests/test_forge.py": FORGER})
    config = make_config(project=root, tiers={"hourly": tier(markers=None)})
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.FAILED, record.reason
    assert record.counts["passed"] == 1 and record.counts["failed"] == 1
    assert "phantom" not in str(record.reason)
    assert record.details["ignored_result_lines"] == 7


def test_honest_run_has_no_ignored_lines(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """The plugin's own lines all carry the nonce: nothing is ignored and the run passes."""
    root = project(tmp_path / "p", {"tests/test_ok.py": "def test_ok():\n    pass\n"})
    config = make_config(project=root, tiers={"hourly": tier(markers=None)})
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.PASSED, record.reason
    assert record.details["ignored_result_lines"] == 0


def _ending(reported: dict[str, int], seen: dict[str, int]) -> RunEnding:
    session = PytestSession(started=True, exitstatus=0, reported_counts=reported, seen_counts=seen)
    return RunEnding(Termination.EXITED, exit_code=0, session=session)


def test_counts_must_equal_the_test_lines_seen() -> None:
    """A session that claims more (or fewer) tests than the lines seen is no pass."""
    decision = decide(_ending({"passed": 3}, {"passed": 1}))
    assert decision.outcome is Outcome.ERROR
    assert "passed 3 reported, 1 seen" in decision.reason
    assert decide(_ending({"passed": 1}, {"passed": 1})).outcome is Outcome.PASSED
