"""A run cannot fill the state disk (issue 20, finding 3), with the real local runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from tests.conftest import tier
from tests.scheduler.run.test_honest_outcomes import local_dispatcher, project

HOG = """
import os, time

def test_maybe_hog():
    if os.environ.get("HOG"):
        out = os.path.dirname(os.environ["SCHEDCTL_RESULTS"])
        with open(os.path.join(out, "hog.bin"), "wb") as fh:
            for _ in range(8):
                fh.write(os.urandom(1024 * 1024))
                fh.flush()
        time.sleep(60)  # the watcher must stop it: the run never ends on its own in time
"""


def test_output_past_the_limit_is_infra_error_and_the_next_run_is_fine(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """A test writing 8 MiB into /work/out with output_limit 2m: infra-error "output limit
    exceeded" well before its 60 s; the next run of another tier passes."""
    root = project(tmp_path / "p", {"tests/test_hog.py": HOG})
    config = make_config(
        project=root,
        tiers={
            "hog": tier(markers=None, env={"HOG": "1"}, output_limit="2m", timeout=120),
            "ok": tier(markers=None, output_limit="2m"),
        },
    )
    dispatcher = local_dispatcher(config)
    record = dispatcher.run(RunRequest("hog"))
    assert record.outcome is Outcome.INFRA_ERROR, record.reason
    assert "output limit exceeded" in record.reason
    assert record.duration_s is not None and record.duration_s < 60
    assert dispatcher.run(RunRequest("ok")).outcome is Outcome.PASSED


def test_run_refused_below_state_min_free(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """With less free state disk than state_min_free, the run is recorded as infra-error and
    never started; the message names the key."""
    root = project(tmp_path / "p", {"tests/test_hog.py": HOG})
    config = make_config(project=root, state_min_free="16t", tiers={"hourly": tier(markers=None)})
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.INFRA_ERROR
    assert "state_min_free" in record.reason
    assert record.started_at is None or record.exit_code is None
