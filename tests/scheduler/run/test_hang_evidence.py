"""Issue 17: a pytest run that hangs past its timeout leaves its stacks and its GPUs' state.

Real local runner, real pytest, the results plugin's faulthandler on SIGUSR1; the GPU is fake.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.cli.history import _evidence_rows
from scheduler.config import config_from_mapping
from scheduler.gpu import FakeProbe, GpuPool, write_fake_gpus
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store import Store
from tests.conftest import tier
from tests.scheduler.gpu.gpu_helpers import fast_policy, gpu

HANGING = """
import time


def test_fine():
    assert True


def wait_for_godot():
    while True:
        time.sleep(0.05)


def test_hangs_forever():
    wait_for_godot()
"""


def test_hung_run_leaves_stacks_naming_the_test_and_a_gpu_snapshot(tmp_path: Path) -> None:
    """The timeout kills the run only after every pytest process dumped its stacks (the file
    names the hanging test's frame) and the leased GPU's state was saved; the reason names the
    test that was running, and ``show`` links the files."""
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_hang.py").write_text(textwrap.dedent(HANGING))
    config = config_from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
            "project": {"path": str(root)},
            "tiers": {"hourly": tier(markers=None, timeout=8, gpus=1)},
            "daemon": {"grace": 2},
        }
    )
    gpus = tmp_path / "gpus.json"
    write_fake_gpus(gpus, [gpu(0)])
    store = Store(config.db_path)
    pool = GpuPool(store, FakeProbe(gpus), fast_policy())
    dispatcher = Dispatcher(config, store, RunnerFactory({"local": LocalRunner()}), gpu_pool=pool)
    record = dispatcher.run(RunRequest("hourly"))

    assert record.outcome is Outcome.TIMEOUT, record.reason
    assert "last test running: tests/test_hang.py::test_hangs_forever" in record.reason
    evidence = record.details["hang_evidence"]
    [stacks] = evidence["stacks"]
    text = Path(stacks).read_text()
    assert "in wait_for_godot" in text and "in test_hangs_forever" in text
    snapshot = json.loads(Path(evidence["gpu_snapshot"]).read_text())
    assert [g["uuid"] for g in snapshot["gpus"]] == ["GPU-fake-0"]
    rows = dict(_evidence_rows(record.details))
    assert rows["stacks"] == stacks and rows["gpu state"] == evidence["gpu_snapshot"]
