"""A run's leftover processes are found through the runner that started them: crash recovery reaps
them, the GPU leak check counts them as the run's own -- also the ranks of a local torchrun
launch, which torchrun starts in sessions of their own (out of reach of the launcher's group).

The owner is a real ``schedctl run weekly`` process, killed -9 mid-launch. Its torchrun is a
stand-in (no torch needed): a "python" whose torch probe passes and whose torchrun launch is
``tests/scheduler/smoketest/fake_launcher.py``, which starts two ranks with ``setsid`` as torchrun
does. Their only tie to the run is the tag they inherited from the local runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runners.base import GpuDevice
from runners.local import LocalRunner
from runners.registry import RunnerFactory, instance_of
from scheduler.config import Config, load_config
from scheduler.daemon.assembly import build_dispatcher
from scheduler.gpu import build_pool
from scheduler.gpu.lease import Lease
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher
from scheduler.store.engine import Store
from tests.conftest import ROOT, SCHEDCTL
from tests.runners.helpers import alive, text_of
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

FAKE_LAUNCHER = ROOT / "tests" / "scheduler" / "smoketest" / "fake_launcher.py"
STAND_IN = """#!/bin/sh
# A python with torch, as far as the smoketest can tell: the torch probe passes, and the torchrun
# launch is the fake launcher (two ranks in sessions of their own, then silence).
[ "$1" = "-c" ] && exit 0
exec {python} {launcher} silent
"""


@dataclass
class CrashedRun:
    config: Config
    run_id: int
    launcher: int
    ranks: list[int]

    @property
    def pids(self) -> list[int]:
        return [self.launcher, *self.ranks]


@pytest.fixture
def crashed_weekly(write_config: Callable[..., Path], tmp_path: Path) -> Iterator[CrashedRun]:
    """A weekly torchrun run whose ``schedctl run`` was killed -9 with both ranks up."""
    python = tmp_path / "python-with-torch"
    python.write_text(STAND_IN.format(python=sys.executable, launcher=FAKE_LAUNCHER))
    python.chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    weekly = {
        "schedule": "0 3 * * 0",
        "kind": "torchrun",
        "timeout": 3600,
        "torchrun": {"nproc": [2], "silence_timeout": 3600},
    }
    path = write_config(
        project={"path": str(project), "python": str(python)}, tiers={"weekly": weekly}
    )
    config = load_config(path)
    owner = subprocess.Popen(
        [*SCHEDCTL, "--config", str(path), "run", "weekly"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tagged = LocalRunner(instance=instance_of(config.state_dir))
    try:

        def ranks_up() -> tuple[int, list[int]] | None:
            for run_dir in (config.runs_dir).glob("*/n2"):
                log = text_of(run_dir / "output.log")
                if log.count("rank up") == 2:
                    launched = log.split("launched [", 1)[1].split("]", 1)[0]
                    return int(run_dir.parent.name), [int(p) for p in launched.split(", ")]
            assert owner.poll() is None, f"schedctl run exited {owner.returncode}"
            return None

        run_id, ranks = wait_for(ranks_up, 120, "both ranks of the weekly launch up")
        launcher = next(p for p in tagged.run_pids(str(run_id)) if p not in ranks)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert all(alive(pid) for pid in [launcher, *ranks]), "nothing should have killed them"
        yield CrashedRun(config, run_id, launcher, ranks)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        tagged.reap_orphans(set())


def test_recovery_reaps_leftover_torchrun_ranks(crashed_weekly: CrashedRun) -> None:
    """Recovery (as at daemon start) records the run interrupted and kills its launcher and its
    ranks, found by the run tag although they left the launcher's session."""
    crashed = crashed_weekly
    store = Store(crashed.config.db_path)
    assert store.get_run(crashed.run_id).outcome is Outcome.RUNNING
    dispatcher = build_dispatcher(crashed.config, store)
    assert dispatcher.recover() == [crashed.run_id]
    record = store.get_run(crashed.run_id)
    assert record.outcome is Outcome.INTERRUPTED, record.reason
    wait_for(lambda: not any(alive(pid) for pid in crashed.pids), 30, "the leftovers to die")
    assert LocalRunner(instance=instance_of(crashed.config.state_dir)).processes() == {}


def test_gpu_leak_check_counts_torchrun_ranks_as_the_runs_own(
    crashed_weekly: CrashedRun, tmp_path: Path
) -> None:
    """Ranks of the run still on its GPU are leaked processes of the run, not foreign ones; a
    process of someone else on that GPU is foreign."""
    crashed = crashed_weekly
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        gpu_file = tmp_path / "gpus.json"
        on_gpu = [*crashed.ranks, stranger.pid]
        gpu_file.write_text(
            json.dumps([{
                "index": 0, "uuid": "GPU-a", "name": "Fake", "memory_total_mib": 80000,
                "memory_used_mib": 900 * len(on_gpu), "utilization_pct": 0,
                "processes": [{"pid": pid, "used_memory_mib": 900} for pid in on_gpu],
            }])
        )  # fmt: skip
        store = Store(crashed.config.db_path)
        pool = build_pool(crashed.config, store, environ={"SCHEDCTL_FAKE_GPUS": str(gpu_file)})
        runners = RunnerFactory(instance=instance_of(crashed.config.state_dir))
        runners.get("local")  # the runner the run went through, as in the dispatcher
        dispatcher = Dispatcher(crashed.config, store, runners, gpu_pool=pool)
        lease = Lease(crashed.run_id, "weekly", devices=(GpuDevice(0, "GPU-a"),))
        found = dispatcher._leak_check(lease)
    finally:
        stranger.kill()
        stranger.wait()
    assert sorted(p["pid"] for p in found["leaked_gpu_processes"]) == sorted(crashed.ranks)
    assert [p["pid"] for p in found["foreign_gpu_processes"]] == [stranger.pid]
