"""Run directories are never reused and the state dir is private (issue 20, findings 5 and 8)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runners.fake import FakeBehaviour
from scheduler.config import Config
from scheduler.kernel.errors import UsageError
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from scheduler.run.rundirs import prepare_state_dir
from tests.conftest import ROOT, SCHEDCTL
from tests.scheduler.conftest import FakeDispatcher

OLD_FAILURE = {"type": "test", "nodeid": "old::failure", "outcome": "failed"}


def old_run_dir(state: Path, run_id: int) -> Path:
    run_dir = state / "runs" / str(run_id)
    run_dir.mkdir(parents=True)
    (run_dir / "results.jsonl").write_text(json.dumps(OLD_FAILURE) + "\n")
    return run_dir


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_new_database_next_to_old_runs_is_refused(tmp_path: Path) -> None:
    """A database that would restart ids beside old run dirs is refused, naming both paths."""
    state = tmp_path / "state"
    old_run_dir(state, 4)
    with pytest.raises(UsageError, match=r"runs holds run directories.*--force"):
        prepare_state_dir(state, state / "schedctl.db")


def test_force_moves_the_old_runs_aside(tmp_path: Path) -> None:
    """--force keeps the old tree (renamed), so no new run can land in it."""
    state = tmp_path / "state"
    old_run_dir(state, 4)
    aside = prepare_state_dir(state, state / "schedctl.db", force=True)
    assert aside is not None and (aside / "4" / "results.jsonl").exists()
    assert not (state / "runs").exists()


def test_state_dir_is_0700_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    """Finding 8: the state dir is private even under umask 0 outside systemd."""
    state = tmp_path / "state"
    prepare_state_dir(state, state / "schedctl.db")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_existing_run_dir_is_never_written_into(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Finding 5: run 1's directory left by a lost database: the run is infra-error, the old
    failure is not credited to it, and the old file is untouched."""
    config = make_config()
    dispatcher = fake_dispatcher(config, FakeBehaviour(tests=(("t::ok", "passed"),)))
    old = old_run_dir(config.state_dir, 1)
    record = dispatcher.run(RunRequest("hourly"))
    assert record.id == 1
    assert record.outcome is Outcome.INFRA_ERROR
    assert "already exists" in record.reason
    assert record.counts.get("failed", 0) == 0
    assert (old / "results.jsonl").read_text() == json.dumps(OLD_FAILURE) + "\n"
    assert dispatcher.run(RunRequest("hourly")).outcome is Outcome.PASSED


def test_cli_refuses_then_forces(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """`schedctl runs` on a fresh database beside old runs: exit 2 and a message; with
    --force it works and the old tree is kept aside."""
    config = write_config()
    old_run_dir(tmp_path / "state", 3)
    base = [*SCHEDCTL, "--config", str(config)]
    refused = subprocess.run(
        [*base, "runs"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    forced = subprocess.run(
        [*SCHEDCTL, "--force", "--config", str(config), "runs"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert list((tmp_path / "state").glob("runs.before-*/3/results.jsonl"))


@pytest.mark.parametrize("run_id", ["\u00b2", "99999999999999999999999", "-1", "abc"])
def test_show_odd_run_ids_without_traceback(write_config: Callable[..., Path], run_id: str) -> None:
    """Finding 8: `schedctl show ²` and huge ids are a clear exit-2 error, not a traceback."""
    config = write_config()
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "show", "--", run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "run id must be a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr
