"""The weekly smoketest on Slurm, CPU: the 1-run and the 2-process run each a batch job, torchrun
started by srun on the single node of the test cluster, compared into a verdict."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.slurm_support import slurm_available
from tests.conftest import SCHEDCTL, require
from tests.scheduler.cli.test_weekly_e2e import torchrun_tier

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.torch]


def test_cpu_smoketest_over_srun_passes_with_a_verdict(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`schedctl run weekly` with runner slurm: both launches ran as Slurm jobs (srun inside),
    the verdict passed with both world sizes, and `show` names the N-run's job."""
    ok, reason = slurm_available()
    require(ok, f"Slurm cluster not available: {reason}")
    try:
        import torch  # noqa: F401
    except ImportError:
        require(False, "torch is not installed (make test installs torch==2.13.0)")
    config = write_config(project=tmp_path, runner="slurm", tiers={"weekly": torchrun_tier()})
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "run", "weekly", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout)
    assert (proc.returncode, result["outcome"]) == (0, "passed"), result["reason"]
    comparison = result["details"]["comparison"]
    assert comparison["status"] == "passed"
    assert {row["world_size"] for row in comparison["table"]} == {1, 2}
    provenance = result["details"]["provenance"]
    assert provenance["runner"] == "slurm"
    jobs = provenance["slurm_jobs"]
    assert set(jobs) == {"1", "2"} and jobs["1"] != jobs["2"]
    launch = tmp_path / "state" / "runs" / str(result["run_id"]) / "n2" / "slurm-job.sh"
    assert "exec srun --export=ALL --nodes=1 --ntasks-per-node=1" in launch.read_text()
    assert "--nproc-per-node=2" in launch.read_text()
