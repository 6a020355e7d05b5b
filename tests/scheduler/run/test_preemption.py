"""Issue 17: the weekly ``gpus: all`` slot preempts an hourly run holding a GPU, end to end.

Real local runner and pytest, fake GPUs. The hourly test holds its GPU until the test removes a
file, so "still running" and "done" are conditions, not sleeps.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.config import config_from_mapping
from scheduler.gpu import FakeProbe, GpuPool, write_fake_gpus
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store import RunRecord, Store
from tests.conftest import tier
from tests.scheduler.gpu.gpu_helpers import fast_policy, gpu
from tests.waiting import wait_for

GRACE_S = 2.0

HOLD = """
import os
import time
from pathlib import Path


def test_hold_the_gpu():
    hold = Path(os.environ["HOLD_FILE"])
    Path(os.environ["HOLDING_FILE"]).touch()
    while hold.exists():
        time.sleep(0.05)
"""


class RunThread(threading.Thread):
    def __init__(self, dispatcher: Dispatcher, request: RunRequest) -> None:
        super().__init__(daemon=True)
        self.dispatcher, self.request = dispatcher, request
        self.record: RunRecord | None = None

    def run(self) -> None:
        self.record = self.dispatcher.run(self.request)


def test_weekly_all_preempts_hourly_which_reruns_after(tmp_path: Path) -> None:
    """The hourly run holding GPU 0 is stopped (stacks naming its test's frame, then SIGTERM,
    grace, kill), recorded ``preempted`` with that evidence and re-run as a new, linked row after
    the weekly run, which starts within grace + 5 s."""
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_hold.py").write_text(HOLD)
    (root / "tests" / "test_quick.py").write_text("def test_quick():\n    assert True\n")
    hold = tmp_path / "hold"
    hold.touch()
    holding = tmp_path / "holding"  # the test is inside its body: its stacks can be asked for
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
            "project": {"path": str(root)},
            "tiers": {
                "hourly": tier(
                    markers=None, gpus=1, timeout=300, paths=["tests/test_hold.py"],
                    env={"HOLD_FILE": str(hold), "HOLDING_FILE": str(holding)},
                ),
                "weekly": tier(
                    markers=None, gpus="all", timeout=300, paths=["tests/test_quick.py"],
                    preempts=["hourly"],
                ),
            },
            "daemon": {"grace": GRACE_S},
            "gpu": {"free_samples": 1, "sample_interval": 0.05, "wait": 120},
        }
    )  # fmt: skip
    gpus = tmp_path / "gpus.json"
    write_fake_gpus(gpus, [gpu(0), gpu(1)])
    store = Store(config.db_path)
    pool = GpuPool(store, FakeProbe(gpus), fast_policy(wait=120))
    dispatcher = Dispatcher(config, store, RunnerFactory({"local": LocalRunner()}), gpu_pool=pool)

    hourly = RunThread(dispatcher, RunRequest("hourly", trigger="schedule"))
    hourly.start()
    wait_for(
        lambda: (
            any(r.outcome is Outcome.RUNNING for r in store.active_runs("hourly"))
            and store.active_leases() != []
            and holding.exists()
        ),
        60,
        "the hourly run to hold GPU 0",
    )
    first_id = store.active_runs("hourly")[0].id
    asked_at = utcnow()
    weekly = RunThread(dispatcher, RunRequest("weekly", trigger="schedule"))
    weekly.start()
    wait_for(lambda: store.get_run(first_id).outcome.is_final, 60, "the hourly run to be preempted")
    hold.unlink()  # the re-run may pass now
    weekly.join(120)
    hourly.join(120)

    preempted = store.get_run(first_id)
    assert weekly.record is not None and hourly.record is not None
    assert weekly.record.outcome is Outcome.PASSED, weekly.record.reason
    assert preempted.outcome is Outcome.PREEMPTED
    assert preempted.reason == f"preempted by run {weekly.record.id} (weekly)"
    [stacks] = preempted.details["hang_evidence"]["stacks"]  # stacks first, then the stop
    assert "in test_hold_the_gpu" in Path(stacks).read_text()
    assert weekly.record.started_at is not None
    assert weekly.record.started_at - asked_at < timedelta(seconds=GRACE_S + 5)
    assert [g["uuid"] for g in weekly.record.gpus] == ["GPU-fake-0", "GPU-fake-1"]

    rerun = store.get_run(preempted.details["requeued_as"])
    assert rerun.trigger == "requeue" and rerun.details["requeue_of"] == first_id
    assert rerun.outcome is Outcome.PASSED, rerun.reason
    assert rerun.started_at is not None and weekly.record.finished_at is not None
    assert rerun.started_at >= weekly.record.finished_at
    assert store.active_leases() == []
