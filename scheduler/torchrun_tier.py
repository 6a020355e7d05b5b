"""Run a ``kind: torchrun`` tier: the 1-vs-N smoketest launches, as a runner-shaped result.

The smoketest supervises its own torchrun processes (stacks before a kill, silence detection),
so this path runs them as local process groups with the leased GPUs; the verdict then goes
through :func:`scheduler.results.classify` like any other run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.base import GpuDevice, RunResult, Termination, utcnow
from scheduler.config import TierConfig, TorchrunConfig


@dataclass(frozen=True)
class TorchrunTierResult:
    result: RunResult
    verdict: Any
    details: dict[str, Any]


def run_torchrun_tier(
    tier: TierConfig,
    *,
    python: str | None,
    workdir: Path,
    run_dir: Path,
    timeout_s: float,
    gpus: Sequence[GpuDevice],
    cancel: threading.Event,
    env: Mapping[str, str],
) -> TorchrunTierResult:
    from scheduler.smoketest import format_table, run_smoketest

    cfg = tier.torchrun or TorchrunConfig()
    started = utcnow()
    interpreter = python or sys.executable
    missing = _torch_missing(interpreter, env)
    if missing:
        result = RunResult(Termination.INFRA, None, started, utcnow(), missing)
        return TorchrunTierResult(result, None, {})
    outcome = run_smoketest(
        cfg,
        python=interpreter,
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=timeout_s,
        gpus=gpus,
        cancel=cancel,
        env=env,
    )
    finished = utcnow()
    details: dict[str, Any] = {"smoketest": outcome.to_json()}
    if outcome.verdict is not None:
        details["comparison"] = outcome.verdict.to_json()
        details["comparison_table"] = format_table(outcome.verdict)
    result = RunResult(
        outcome.termination, outcome.exit_code, started, finished, outcome.message,
        provenance={"runner": "torchrun-local"},
    )  # fmt: skip
    return TorchrunTierResult(result, outcome.verdict, details)


def _torch_missing(python: str, env: Mapping[str, str]) -> str:
    """Why ``python`` cannot run the smoketest (an infra problem, not a test failure), or ''."""
    try:
        proc = subprocess.run(
            [python, "-c", "import torch, torch.distributed"],
            env=dict(env), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"torch is not importable by {python} ({last}); install it in the project's python"
    return ""
