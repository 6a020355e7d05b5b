"""Issue 17: the pre-flight health check, drains and undrains, with the fake backend.

Each injected fault goes the whole way: finding -> drain -> ``schedctl gpus`` -> metric -> one
alert -> lease refused (the healthy GPU is leased instead) -> undrain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from scheduler.alerts import AlertRecorder
from scheduler.alerts.payload import Alert
from scheduler.alerts.sinks.base import Delivery, Sink
from scheduler.cli.gpus import gpus_command, gpus_report
from scheduler.config import config_from_mapping
from scheduler.gpu import FakeProbe, GpuPool, write_fake_gpus
from scheduler.gpu.health import HealthMonitor, assess
from scheduler.gpu.probe import GpuHealth
from scheduler.kernel.errors import GpuError, UsageError
from scheduler.kernel.events import GpuDrained, GpuUndrained
from scheduler.metrics.gpus import GpuCollector
from scheduler.store.engine import Store
from tests.scheduler.gpu.gpu_helpers import FOREIGN_PID, fast_policy, gpu

NewRun = Callable[..., int]


class OpsSink(Sink):
    """A sink for tier ``gpu`` only, as an ops channel is configured; delivers nothing."""

    kind = "test"

    @property
    def target(self) -> str:
        return "ops"

    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        return None


FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "xid": ({"xids": [79]}, "xid"),
    "ecc": ({"ecc_uncorrectable": 3}, "ecc-uncorrectable"),
    "retired-pages": ({"retired_pages_pending": True}, "retired-pages-pending"),
    "row-remap": ({"row_remap_failure": True}, "row-remap-failure"),
    "lost": ({"lost": True}, "gpu-lost"),
    "leftover-process": (
        {"processes": [{"pid": FOREIGN_PID, "used_memory_mib": 900}]},
        "unexplained-process",
    ),
}


class Rig:
    """A pool with the health monitor over a fake GPU file, a real store and the alert recorder."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.path = tmp_path / "gpus.json"
        self.store = store
        self.write()
        self.probe = FakeProbe(self.path)
        self.events: list[object] = []
        self.recorder = AlertRecorder(store, [OpsSink("ops", tiers=["gpu"])])
        self.monitor = HealthMonitor(self.probe, store, own_pids={1}, notify=self.notify)
        self.pool = GpuPool(store, self.probe, fast_policy(), own_pids={1}, health=self.monitor)

    def notify(self, event: Any) -> None:
        self.events.append(event)
        self.recorder(event)

    def write(self, **faults: Any) -> None:
        entries = [{**gpu(0), "ecc_uncorrectable": 0}, {**gpu(1), "ecc_uncorrectable": 0}]
        entries[0].update(faults)
        write_fake_gpus(self.path, entries)

    def check(self) -> None:
        self.monitor.check(self.probe.snapshot(), set())


@pytest.fixture
def rig(tmp_path: Path, store: Store) -> Rig:
    """Two healthy fake GPUs, checked once (the ECC baseline)."""
    made = Rig(tmp_path, store)
    made.check()
    return made


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_fault_drains_alerts_once_and_undrains(
    fault: str, rig: Rig, store: Store, new_run: NewRun, tmp_path: Path
) -> None:
    """A faulty GPU 0 is drained with its finding, shown, exported, alerted once, never leased;
    after the fault is gone and it is undrained (by hand, or by a re-check for faults that
    clear), it is leased again."""
    values, code = FAULTS[fault]
    rig.write(**values)
    lease = rig.pool.acquire(new_run(), "hourly", 1, 0, 2)
    assert lease.uuids == ["GPU-fake-1"]  # the lowest index would have been GPU 0
    [drain] = store.drained_gpus()
    assert (drain["gpu_uuid"], drain["code"]) == ("GPU-fake-0", code)

    report, exit_code = gpus_report(rig.probe, fast_policy(), {}, store.drained_gpus())
    first = report["gpus"][0]
    assert exit_code == 0 and not first["free"] and first["drain"]["code"] == code
    assert first["reasons"][0].startswith(f"drained: {code}")

    registry = CollectorRegistry()
    registry.register(GpuCollector(rig.probe, fast_policy(), dict, drains=store.drained_gpus))
    labels = {"gpu": "0", "uuid": "GPU-fake-0", "reason": code}
    assert registry.get_sample_value("schedctl_gpu_drained", labels) == 1.0
    assert registry.get_sample_value("schedctl_gpu_drained", {**labels, "gpu": "1"}) is None

    rig.pool.release(lease.run_id)
    with pytest.raises(GpuError, match=f"1 drained: gpu0 {code}"):
        rig.pool.acquire(new_run(), "weekly", 2, 0, 2)
    rows = store.outbox_rows()
    assert [(r.fingerprint, r.action) for r in rows] == [("gpu/GPU-fake-0/gpu-drained", "fire")]
    assert [type(e) for e in rig.events] == [GpuDrained]

    rig.write()  # the fault is gone (a reset, the leftover process exited)
    if code == "unexplained-process":
        rig.check()
        assert [type(e) for e in rig.events] == [GpuDrained, GpuUndrained]
    else:
        rig.check()
        assert store.drained_gpus() != [], "a hardware finding needs a person to undrain"
        config = config_from_mapping({"project": {"path": str(tmp_path)}, "tiers": {"h": {}}})
        app = SimpleNamespace(config=config, store=store)
        result = CliRunner().invoke(gpus_command, ["undrain", "0"], obj=app)
        assert result.exit_code == 0, result.output
        assert f"was {code}" in result.output
    assert store.drained_gpus() == []
    both = rig.pool.acquire(new_run(), "weekly", 2, 0, 2)
    assert both.uuids == ["GPU-fake-0", "GPU-fake-1"]


def test_undrain_of_a_gpu_not_drained_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    """``gpus undrain`` names what is drained when the GPU given is not (exit 2)."""
    config = config_from_mapping({"project": {"path": str(tmp_path)}, "tiers": {"h": {}}})
    store.drain_gpu("GPU-fake-1", 1, "xid", "critical Xid 79", False)
    result = CliRunner().invoke(
        gpus_command, ["undrain", "0"], obj=SimpleNamespace(config=config, store=store)
    )
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert "1 (GPU-fake-1)" in str(result.exception)


class TestAssess:
    """The pure check: each counter and its threshold."""

    def test_program_xids_do_not_drain(self) -> None:
        """Xid 13/31/43 come from a program's own fault: the next run gets a fresh context."""
        findings, _ = assess([GpuHealth(0, "G0", xids=(13, 31, 43))], None, ecc_baseline={})
        assert findings == []

    def test_ecc_before_the_first_check_is_no_news(self) -> None:
        """Uncorrectable errors counted before the daemon started set the baseline only."""
        findings, baseline = assess(
            [GpuHealth(0, "G0", ecc_uncorrectable=7)], None, ecc_baseline={}
        )
        assert findings == [] and baseline == {"G0": 7}
        findings, _ = assess([GpuHealth(0, "G0", ecc_uncorrectable=8)], None, ecc_baseline=baseline)
        assert [f.code.value for f in findings] == ["ecc-uncorrectable"]

    def test_leased_gpu_processes_are_explained(self, tmp_path: Path) -> None:
        """A process on a leased GPU belongs to its run; on an unleased one it is a finding."""
        path = tmp_path / "g.json"
        write_fake_gpus(path, [gpu(0, procs=((FOREIGN_PID, 10),))])
        host = FakeProbe(path).snapshot()
        assert assess([], host, ecc_baseline={}, leased={"GPU-fake-0"})[0] == []
        assert [f.code.value for f in assess([], host, ecc_baseline={})[0]] == [
            "unexplained-process"
        ]

    def test_fewer_gpus_than_expected_is_a_host_finding(self, tmp_path: Path, store: Store) -> None:
        """gpu.expected_count: a missing GPU drains the host key, which refuses 'all' requests
        (they would silently run on fewer GPUs) but not a request for one GPU."""
        path = tmp_path / "g.json"
        write_fake_gpus(path, [gpu(0)])
        probe = FakeProbe(path)
        monitor = HealthMonitor(probe, store, expected_count=2)
        pool = GpuPool(store, probe, fast_policy(), health=monitor)
        run = store.create_run(tier="weekly", trigger="manual", outcome="running")
        assert run is not None
        with pytest.raises(GpuError, match="gpu-missing: 1 GPUs present"):
            pool.acquire(run, "weekly", "all", 0, 2)
        assert pool.acquire(run, "weekly", 1, 0, 2).uuids == ["GPU-fake-0"]


def test_kernel_log_xid_lines_are_parsed() -> None:
    """The fallback source: ``NVRM: Xid`` lines of /dev/kmsg give the bus id and the Xid."""
    from scheduler.gpu.xidlog import parse_xid_lines

    lines = [
        "4,1234,5678,-;NVRM: Xid (PCI:0000:3B:00): 79, pid=0, GPU has fallen off the bus.",
        "6,1235,5679,-;usb 1-1: new device",
        "4,1236,5680,-;NVRM: Xid (PCI:0000:86:00): 13, Graphics Exception",
    ]
    assert parse_xid_lines(lines) == [("0000:3b:00", 79), ("0000:86:00", 13)]
