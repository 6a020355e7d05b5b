"""The real thing: torchrun with gloo on CPU, 1 and 2 processes, through run_smoketest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from runners.local import LocalRunner
from scheduler.config import TorchrunConfig
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.launch import SmoketestOutcome, run_smoketest
from scheduler.smoketest.launcher import local_launcher
from tests.scheduler.smoketest.conftest import need_torch

pytestmark = [pytest.mark.torch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def smoketest(
    tmp_path: Path, timeout_s: float = 240, runner: LocalRunner | None = None, **cfg: Any
) -> SmoketestOutcome:
    """Launch through ``runner`` (a local runner of the test's own: its run tag finds every
    leftover, ranks included)."""
    need_torch()
    return run_smoketest(
        TorchrunConfig(steps=12, **cfg),
        python=sys.executable,
        workdir=ROOT,
        run_dir=tmp_path / "run",
        timeout_s=timeout_s,
        gpus=[],
        cancel=threading.Event(),
        env={k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")},
        launcher=local_launcher(sys.executable, ROOT, tmp_path / "run", runner=runner),
    )


def test_cpu_one_and_two_processes_pass(tmp_path: Path) -> None:
    """1 and 2 gloo processes agree: verdict passed, numbers in the table and the JSON file."""
    runner = LocalRunner()
    outcome = smoketest(tmp_path, runner=runner)
    assert outcome.termination is Termination.EXITED, outcome.message
    assert outcome.verdict is not None
    assert outcome.verdict.status == "passed", outcome.verdict.reasons
    assert outcome.exit_code == 0
    rows = {row["world_size"]: row for row in outcome.verdict.table}
    assert sorted(rows) == [1, 2]
    assert rows[2]["loss_rel_diff"] < 1e-3  # same global batch: the same trajectory
    assert rows[1]["samples_per_s"] > 0 and rows[2]["efficiency"] > 0
    for n, run in outcome.runs.items():
        assert run.summary is not None
        assert run.summary["world_size"] == n
        assert run.summary["backend"] == "gloo"
        assert run.summary["loss_decreased"] and run.summary["params_in_sync"]
        assert run.summary["final_loss"] < run.summary["initial_loss"]
        assert run.rank_logs and all(run.rank_logs.values())
        print(f"N={n}: {run.duration_s:.1f} s, {run.summary['samples_per_s']:,.0f} samples/s")
    print(f"efficiency N=2: {rows[2]['efficiency']}")
    stored = json.loads((tmp_path / "run" / "smoketest.json").read_text())
    assert stored["verdict"]["status"] == "passed"
    assert stored["runs"]["2"]["summary"]["world_size"] == 2
    assert runner.processes() == {}


def test_injected_desync_fails_naming_the_check(tmp_path: Path) -> None:
    """A rank that perturbs its parameters outside DDP fails the verdict on params_in_sync."""
    outcome = smoketest(tmp_path, inject_fault="desync")
    assert outcome.termination is Termination.EXITED
    assert outcome.verdict is not None and outcome.verdict.status == "failed"
    assert outcome.verdict.reasons == [
        "N=2: check params_in_sync failed (the ranks' parameters diverged)"
    ]
    assert outcome.runs[1].exit_code == 0  # the baseline stays clean
    assert outcome.runs[2].exit_code == 1
    rank1 = "\n".join(outcome.runs[2].rank_logs[1])
    assert "parameters of rank 1 differ from rank 0" in rank1


def test_injected_hang_times_out_with_stacks_and_no_leftovers(tmp_path: Path) -> None:
    """One rank sleeping forever ends as a timeout, with both ranks' stacks, no process left."""
    runner = LocalRunner()
    outcome = smoketest(tmp_path, runner=runner, nproc=[2], inject_fault="hang", run_timeout=20)
    assert outcome.termination is Termination.TIMEOUT
    run = outcome.runs[2]
    assert run.termination is Termination.TIMEOUT
    assert "timed out after 20s" in run.message
    assert "--- rank 0" in run.stacks and "--- rank 1" in run.stacks
    assert "Current thread" in run.stacks and 'File "' in run.stacks
    assert "_hang" in run.stacks  # rank 1 is caught in the injected sleep
    assert "backward" in run.stacks  # rank 0 waits in DDP's all-reduce
    assert outcome.verdict is not None and outcome.verdict.status == "failed"
    assert runner.processes() == {}


def test_program_writes_step_and_summary_lines(tmp_path: Path) -> None:
    """Run by hand (a world of one), the program writes per-step lines and a summary line."""
    need_torch()
    out = tmp_path / "metrics.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.smoketest", "--steps", "4", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "RANK")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in records] == ["step"] * 4 + ["summary"]
    assert set(records[0]) >= {"step", "loss", "step_time_s", "samples_per_s"}
    summary = records[-1]
    assert summary["world_size"] == 1 and summary["checks_failed"] == []
    assert set(summary) >= {
        "backend", "device", "final_loss", "initial_loss", "samples_per_s", "peak_memory_mb",
        "params_in_sync", "allreduce_ok", "loss_decreased",
    }  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == out.read_text().splitlines()[-1]
