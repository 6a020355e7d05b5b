"""The weekly torchrun tier through the CLI on CPU: 1 and 2 gloo processes, compared."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SCHEDCTL, require

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def torchrun_tier(**torchrun: Any) -> dict[str, Any]:
    return {
        "schedule": "0 3 * * 0",
        "kind": "torchrun",
        "timeout": 240,
        "torchrun": {"nproc": [1, "all"], "cpu_procs": 2, "steps": 8, **torchrun},
    }


@pytest.fixture(autouse=True)
def _torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        require(False, "torch is not installed (make test installs torch==2.13.0)")


def run_weekly(config: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "run", "weekly", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_weekly_passes_with_numbers(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """schedctl run weekly on CPU: both runs pass, verdict passed, numbers in the JSON."""
    config = write_config(project=tmp_path, tiers={"weekly": torchrun_tier()})
    code, result = run_weekly(config)
    assert (code, result["outcome"]) == (0, "passed"), result["reason"]
    comparison = result["details"]["comparison"]
    assert comparison["status"] == "passed"
    rows = {row["world_size"]: row for row in comparison["table"]}
    assert set(rows) == {1, 2}
    assert rows[1]["samples_per_s"] > 0 and rows[2]["samples_per_s"] > 0
    assert rows[2]["efficiency"] == pytest.approx(
        rows[2]["samples_per_s"] / (2 * rows[1]["samples_per_s"]), rel=1e-3
    )
    shown = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "show", str(result["run_id"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "efficiency" in shown and "verdict: passed" in shown


def test_injected_desync_fails_naming_the_check(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A rank that perturbs its parameters makes the verdict fail on the sync check."""
    config = write_config(project=tmp_path, tiers={"weekly": torchrun_tier(inject_fault="desync")})
    code, result = run_weekly(config)
    assert (code, result["outcome"]) == (1, "failed")
    assert "sync" in result["reason"]
    assert result["details"]["comparison"]["status"] == "failed"


def test_missing_torch_is_infra(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """A project python without torch is an infra-error, not a failed smoketest."""
    config = write_config(
        project={"path": str(tmp_path), "python": "/usr/bin/python3"},
        tiers={"weekly": torchrun_tier()},
    )
    code, result = run_weekly(config)
    assert (code, result["outcome"]) == (1, "infra-error")
    assert "torch is not importable" in result["reason"]
