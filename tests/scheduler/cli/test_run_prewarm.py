"""`schedctl run` starts its local pytest process while it prepares the run (runners/prewarm.py):
through the real CLI process, the run uses the launcher, and leaves no launcher behind."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.local import LocalRunner
from runners.registry import instance_of
from tests.conftest import SCHEDCTL, tier

pytestmark = pytest.mark.slow


def schedctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCHEDCTL, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def launchers(state_dir: Path) -> dict[str, set[int]]:
    """Live launcher processes of the state dir's instance (their ``launch-`` tags)."""
    runner = LocalRunner(instance=instance_of(state_dir))
    return {k: v for k, v in runner.processes().items() if k.startswith("launch-")}


def test_a_local_run_uses_the_launcher_it_started(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(tiers={"hourly": tier(env={"TIER_VAR": "1"})})
    proc = schedctl(config, "run", "hourly", "--json")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    shown = json.loads(schedctl(config, "show", str(run["run_id"]), "--json").stdout)
    provenance = shown["details"]["provenance"]
    assert provenance["prewarmed"].startswith(f"{instance_of(tmp_path / 'state')}:launch-")
    assert shown["counts"]["passed"] > 0
    assert launchers(tmp_path / "state") == {}


def test_the_next_run_starts_its_launcher_before_validating(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run remembers its plan; the next one's early launcher is started from it, and
    kept when the validated config makes the same plan, replaced when it does not."""
    from scheduler.cli.app import AppContext
    from scheduler.cli.run_cmd import _early_launcher, _launcher
    from scheduler.run.launch_plans import recall

    config = write_config()
    assert _early_launcher(AppContext(str(config)), "hourly", None) is None
    first = _launcher(AppContext(str(config)), "hourly", None, None)
    assert first is not None
    first.discard()
    assert recall(config, "hourly", None) == first.plan
    early = _early_launcher(AppContext(str(config)), "hourly", None)
    assert early is not None and early.plan == first.plan
    try:
        assert _launcher(AppContext(str(config)), "hourly", None, early) is early
        monkeypatch.setenv("TZ", "Pacific/Apia")  # the run's environment takes TZ from here
        other = _launcher(AppContext(str(config)), "hourly", None, early)
        assert other is not None and other is not early
        assert other.plan is not None and other.plan.env["TZ"] == "Pacific/Apia"
        other.discard()
    finally:
        early.discard()
