"""Runs on a real single-node Slurm cluster (scripts/ensure-slurm.sh): outcomes as the dispatcher
records them, Slurm's GPU leasing, the pending wait, cancel and crash recovery through the daemon.

The job programs here wait on files the test writes (a program that must hang may sleep); the
test waits on conditions (a row, a file, the queue), never on a sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runners.registry import RunnerFactory, instance_of
from runners.slurm_support import SlurmCli, slurm_available
from scheduler.config import Config, config_from_mapping
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store.engine import RunRecord, Store
from tests.conftest import ROOT, SCHEDCTL, require, tier
from tests.runners.helpers import Background
from tests.waiting import wait_for

pytestmark = pytest.mark.slurm

PROJECT = textwrap.dedent("""
    import os, pathlib, time, pytest

    HERE = pathlib.Path(os.environ["SHARED"])

    @pytest.mark.good
    def test_one():
        assert True

    @pytest.mark.good
    def test_two():
        assert True

    @pytest.mark.bad
    def test_three():
        assert 1 == 2

    @pytest.mark.hang
    def test_hang():
        time.sleep(600)

    @pytest.mark.hog
    def test_hog():
        chunks = []
        for _ in range(100):
            chunks.append(bytearray(20 * 1024 * 1024))
            time.sleep(0.05)

    @pytest.mark.gpu_hold
    def test_hold_a_gpu():
        me = os.environ["TAG"]
        (HERE / f"{me}.gpus").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "?"))
        while not (HERE / "release").exists():
            time.sleep(0.1)
""")
INI = "[pytest]\nmarkers =\n    good\n    bad\n    hang\n    hog\n    gpu_hold\n"


@pytest.fixture(scope="module")
def cluster() -> SlurmCli:
    ok, reason = slurm_available()
    require(ok, f"Slurm cluster not available: {reason}")
    return SlurmCli()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "test_suite.py").write_text(PROJECT)
    (path / "pytest.ini").write_text(INI)
    (tmp_path / "shared").mkdir()
    return path


def _config(tmp_path: Path, project: Path, state: str = "state", **top: Any) -> Config:
    shared = str(tmp_path / "shared")

    def t(markers: str, **kw: Any) -> dict[str, Any]:
        env = {"SHARED": shared, "TAG": kw.pop("tag", markers)}
        settings = {"schedule": None, "markers": markers, "memory": "256m", "timeout": 120}
        return tier(**{**settings, "env": env, **kw})

    data: dict[str, Any] = {
        "state_dir": str(tmp_path / state),
        "runner": "slurm",
        "slurm": {"shared_dir": str(tmp_path / "slurm-runs")},
        "project": {"path": str(project)},
        "tiers": {
            "good": t("good"),
            "bad": t("bad"),
            "hang": t("hang"),
            "hog": t("hog", memory="100M"),
            "gpu-a": t("gpu_hold", gpus=1, tag="a"),
            "gpu-b": t("gpu_hold", gpus=1, tag="b"),
            "gpu-c": t("gpu_hold", gpus=1, tag="c"),
        },
        "daemon": {"metrics_address": None, "web_address": None, "grace": 2},
    }
    data.update(top)
    return config_from_mapping(data, source=str(tmp_path / "config.yaml"))


def _dispatcher(config: Config, runner: str = "slurm") -> Dispatcher:
    factory = RunnerFactory(instance=instance_of(config.state_dir))
    return Dispatcher(config, Store(config.db_path), factory)


def _our_jobs(cli: SlurmCli, config: Config) -> dict[str, str]:
    return cli.jobs_named(f"schedctl-{instance_of(config.state_dir)}-")


def test_passing_and_failing_tiers_count_as_on_the_local_runner(
    tmp_path: Path, project: Path, cluster: SlurmCli
) -> None:
    """The same tiers on Slurm and on the local runner: same outcomes, same counts; the Slurm
    run's provenance names its job, node and partition, and its files are in the shared dir."""
    config = _config(tmp_path, project)
    slurm, local = _dispatcher(config), _dispatcher(config)
    for name, outcome in (("good", Outcome.PASSED), ("bad", Outcome.FAILED)):
        on_slurm = slurm.run(RunRequest(name))
        on_local = local.run(RunRequest(name, runner="local"))
        assert (on_slurm.outcome, on_local.outcome) == (outcome, outcome), on_slurm.reason
        assert dict(on_slurm.counts) == dict(on_local.counts)
        assert on_slurm.runner == "slurm"
        provenance = on_slurm.details["provenance"]
        assert provenance["slurm_job_id"].isdigit()
        assert provenance["slurm_nodes"] and provenance["slurm_partition"]
        assert Path(on_slurm.run_dir or "").is_relative_to(tmp_path / "slurm-runs")
    assert _our_jobs(cluster, config) == {}


def test_timeout_and_memory_limit(tmp_path: Path, project: Path, cluster: SlurmCli) -> None:
    """A hanging test past a 3 s timeout is `timeout`; a memory hog under `memory: 100M` is
    `oom` (Slurm's OverMemoryKill); neither leaves a job behind."""
    config = _config(tmp_path, project)
    dispatcher = _dispatcher(config)
    hung = dispatcher.run(RunRequest("hang", timeout_s=3))
    assert hung.outcome is Outcome.TIMEOUT, hung.reason
    hog = dispatcher.run(RunRequest("hog"))
    assert hog.outcome is Outcome.OOM, hog.reason
    assert "memory" in hog.reason
    assert _our_jobs(cluster, config) == {}


def test_slurm_leases_distinct_gpus_and_a_third_run_gives_up(
    tmp_path: Path, project: Path, cluster: SlurmCli
) -> None:
    """Two `gpus: 1` tiers run at once on different GPUs (Slurm's gres, not NVML); a third
    waits `gpu.wait` and ends `gpu-unavailable` with Slurm's pending reason."""
    shared = tmp_path / "shared"
    config = _config(tmp_path, project)
    dispatcher = _dispatcher(config)
    first = Background(lambda cancel: dispatcher.run(RunRequest("gpu-a"), cancel))
    second = Background(lambda cancel: dispatcher.run(RunRequest("gpu-b"), cancel))
    try:
        wait_for(
            lambda: (shared / "a.gpus").exists() and (shared / "b.gpus").exists(),
            60,
            "both GPU runs to hold their GPU",
        )
        seen = {(shared / f"{x}.gpus").read_text() for x in "ab"}
        assert seen == {"0", "1"}
        impatient = _dispatcher(_config(tmp_path, project, state="state2", gpu={"wait": 2}))
        third = impatient.run(RunRequest("gpu-c"))
        assert third.outcome is Outcome.GPU_UNAVAILABLE, third.reason
        assert "Resources" in third.reason or "pending" in third.reason
        assert not (shared / "c.gpus").exists()
    finally:
        (shared / "release").write_text("")
    a, b = first.result(), second.result()
    assert (a.outcome, b.outcome) == (Outcome.PASSED, Outcome.PASSED), (a.reason, b.reason)
    devices = {r.details["provenance"].get("cuda_visible_devices") for r in (a, b)}
    assert devices == {"0", "1"}
    assert _our_jobs(cluster, config) == {}


class _Daemon:
    """One daemon process on the Slurm config, and the CLI next to it."""

    def __init__(self, config_path: Path, state: Path) -> None:
        self.config_path = config_path
        self.state = state
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.config_path.parent / f"daemon{len(self.procs)}.log").open("w")
        argv = [*SCHEDCTL, "--config", str(self.config_path), "daemon"]
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log, stderr=log)
        self.procs.append(proc)
        wait_for(lambda: (self.state / "api.sock").exists() or proc.poll() is not None, 60,
                 "the daemon's socket")  # fmt: skip
        assert proc.poll() is None, (self.config_path.parent / "daemon0.log").read_text()
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SCHEDCTL, "--config", str(self.config_path), *args], cwd=ROOT, env=self.env(),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def store(self) -> Store:
        return Store(self.state / "schedctl.db")

    def record(self, run_id: int) -> RunRecord:
        return self.store().get_run(run_id)


@pytest.fixture
def daemon(tmp_path: Path, project: Path) -> Iterator[tuple[_Daemon, Config]]:
    config = _config(tmp_path, project)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json", exclude={"source_file"})))
    d = _Daemon(path, config.state_dir)
    yield d, config
    for proc in d.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    from runners.slurm import SlurmRunner

    SlurmRunner(instance=instance_of(config.state_dir)).reap_orphans(set())


def _job_running(cli: SlurmCli, config: Config) -> Callable[[], str | None]:
    def running() -> str | None:
        jobs = _our_jobs(cli, config)
        for job_id in jobs:
            info = cli.job(job_id)
            if info is not None and info.state == "RUNNING":
                return job_id
        return None

    return running


@pytest.mark.slow
def test_schedctl_cancel_scancels_the_job(
    daemon: tuple[_Daemon, Config], cluster: SlurmCli
) -> None:
    """`schedctl cancel` of a run on Slurm: the run is `cancelled`, its job leaves squeue, and
    `schedctl show` prints the job's provenance."""
    d, config = daemon
    d.start()
    submitted = d.cli("run", "hang", "--detach")
    assert submitted.returncode == 0, submitted.stderr
    run_id = int(submitted.stdout.strip())
    wait_for(_job_running(cluster, config), 60, "the run's Slurm job to run")
    cancelled = d.cli("cancel", str(run_id))
    assert cancelled.returncode == 0, cancelled.stderr
    record = wait_for(lambda: (r := d.record(run_id)).outcome.is_final and r, 60, "the run to end")
    assert record.outcome is Outcome.CANCELLED, record.reason
    assert _our_jobs(cluster, config) == {}
    shown = d.cli("show", str(run_id))
    assert "slurm job" in shown.stdout, shown.stdout


@pytest.mark.slow
def test_kill9_of_the_daemon_leaves_no_job(
    daemon: tuple[_Daemon, Config], cluster: SlurmCli
) -> None:
    """kill -9 of the daemon while its run's job runs: the restarted daemon records the run
    `interrupted` and scancels the job; nothing of it stays in squeue."""
    d, config = daemon
    first = d.start()
    submitted = d.cli("run", "hang", "--detach")
    assert submitted.returncode == 0, submitted.stderr
    run_id = int(submitted.stdout.strip())
    job_id = wait_for(_job_running(cluster, config), 60, "the run's Slurm job to run")
    first.kill()
    first.wait(10)
    assert job_id in _our_jobs(cluster, config), "nothing should have cancelled the job yet"
    d.start()
    record = wait_for(
        lambda: (r := d.record(run_id)).outcome.is_final and r, 60, "the run to be resolved"
    )
    assert record.outcome is Outcome.INTERRUPTED, record.reason
    wait_for(lambda: not _our_jobs(cluster, config), 30, "the orphaned job to leave squeue")
