"""The container launcher against a scripted runner: specs, evidence, infra errors (no engine)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.base import PreStop, Runner, RunResult, RunSpec
from scheduler.config import TierConfig, TorchrunConfig
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.run.kinds.torchrun import LaunchRunner, run_torchrun_tier
from scheduler.smoketest.container import PROGRAM_FILE, ContainerLauncher, install_program
from scheduler.smoketest.evidence import dumped_stacks
from scheduler.smoketest.launcher import LABEL_NPROC, STACK_STAGGER_S, LaunchPlan
from tests.scheduler.smoketest.conftest import need_torch

STACK = (
    "Current thread 0x00007f37f3988040 (most recent call first):\n"
    '  File "/work/plugin/schedctl_smoketest.py", line 175 in _hang\n'
)
SUMMARY = '{"type": "summary", "world_size": 2, "final_loss": 0.1}\n'

Script = Callable[[RunSpec], RunResult]


class ScriptedRunner(Runner):
    """A container runner stand-in: records specs, writes what ``script`` says, returns it."""

    alias = "docker"
    in_container = True

    def __init__(self, script: Script) -> None:
        self.script = script
        self.specs: list[RunSpec] = []

    def owns(self, pid: int, run_id: str) -> bool:
        return False

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        return []

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        self.specs.append(spec)
        return self.script(spec)


def result(termination: Termination, code: int | None, message: str = "") -> RunResult:
    provenance = {"runner": "docker", "image": "img:1", "image_id": "sha256:1"}
    provenance["container_id"] = f"c{code}"
    return RunResult(termination, code, utcnow(), utcnow(), message, provenance=provenance)


def rank_file(spec: RunSpec, rank: int, stream: str, text: str) -> None:
    path = spec.run_dir / "ranks" / "rdzv" / "attempt_0" / str(rank) / f"{stream}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def plan(tmp_path: Path, nproc: int = 2) -> LaunchPlan:
    out = tmp_path / f"n{nproc}"
    return LaunchPlan(
        nproc, ["python3", "-m", "torch.distributed.run"], {"A": "1"}, out,
        out / "metrics.jsonl", out / "ranks", 30.0, 20.0,
    )  # fmt: skip


def launcher(tmp_path: Path, script: Script) -> tuple[ContainerLauncher, ScriptedRunner]:
    runner = ScriptedRunner(script)
    template = RunSpec(
        run_id="7", tier="weekly", argv=(), workdir=tmp_path, run_dir=tmp_path,
        timeout_s=100, plugin_dir=tmp_path / "plugin", labels={"schedctl.host": "h"},
    )  # fmt: skip
    return ContainerLauncher(runner, template, stack_wait_s=1.5), runner


def test_each_launch_is_the_template_with_its_own_command(tmp_path: Path) -> None:
    """The launch dir is the run dir; timeouts, labels and the stack hook come with it."""

    def ok(spec: RunSpec) -> RunResult:
        (spec.run_dir / "metrics.jsonl").write_text(SUMMARY)
        return result(Termination.EXITED, 0)

    launch, runner = launcher(tmp_path, ok)
    done = launch.launch(plan(tmp_path), threading.Event())
    (spec,) = runner.specs
    assert (spec.run_id, spec.tier, spec.run_dir) == ("7", "weekly", tmp_path / "n2")
    assert (spec.timeout_s, spec.silence_timeout_s) == (30.0, 20.0)
    assert spec.labels == {"schedctl.host": "h", LABEL_NPROC: "2"}
    assert spec.pre_stop == PreStop(signal=signal.SIGUSR1, wait_s=1.5, stagger_s=STACK_STAGGER_S)
    assert (tmp_path / "plugin" / PROGRAM_FILE).is_file()
    assert launch.builtin_script == tmp_path / "plugin" / PROGRAM_FILE
    assert (done.termination, done.exit_code, done.message) == (Termination.EXITED, 0, "exited 0")
    assert done.summary is not None and done.summary["final_loss"] == 0.1
    assert done.provenance["container_id"] == "c0"


def test_timeout_keeps_each_ranks_stacks(tmp_path: Path) -> None:
    """A timed-out launch reports every rank's faulthandler dump and its last log lines."""

    def hang(spec: RunSpec) -> RunResult:
        rank_file(spec, 0, "stderr", "warming up\n" + STACK.replace("_hang", "_step"))
        rank_file(spec, 1, "stderr", "smoketest: rank 1: injected hang\n" + STACK)
        return result(Termination.TIMEOUT, 137, "timed out after 30s")

    launch, _ = launcher(tmp_path, hang)
    done = launch.launch(plan(tmp_path), threading.Event())
    assert done.termination is Termination.TIMEOUT
    assert done.message == "timed out after 30s; Python stacks captured"
    assert "--- rank 0" in done.stacks and "--- rank 1" in done.stacks
    assert "in _hang" in done.stacks.split("--- rank 1")[1]
    assert "warming up" not in done.stacks
    assert "[stderr] smoketest: rank 1: injected hang" in done.rank_logs[1]


def test_dumped_stacks_without_a_dump_is_empty(tmp_path: Path) -> None:
    """Stderr without a faulthandler header gives no stacks (nothing is invented)."""
    path = tmp_path / "r" / "attempt_0" / "0" / "stderr.log"
    path.parent.mkdir(parents=True)
    path.write_text("Traceback (most recent call last):\n  boom\n")
    assert dumped_stacks(tmp_path) == ""


def test_runner_infra_error_is_raised(tmp_path: Path) -> None:
    """An engine or image problem surfaces as InfraError with the runner's message."""
    launch, _ = launcher(tmp_path, lambda spec: result(Termination.INFRA, None, "image gone"))
    with pytest.raises(InfraError, match="image gone"):
        launch.launch(plan(tmp_path), threading.Event())


def test_image_without_torch_is_infra(tmp_path: Path) -> None:
    """A launcher that cannot import torch is an infra error naming the image."""

    def no_torch(spec: RunSpec) -> RunResult:
        spec.log_path.write_text(
            "/usr/bin/python3: Error while finding module specification for "
            "'torch.distributed.run' (ModuleNotFoundError: No module named 'torch')\n"
        )
        return result(Termination.EXITED, 1)

    launch, _ = launcher(tmp_path, no_torch)
    with pytest.raises(InfraError, match=r"torch is not importable .* image img:1"):
        launch.launch(plan(tmp_path), threading.Event())


def test_failed_ranks_are_not_mistaken_for_missing_torch(tmp_path: Path) -> None:
    """A non-zero exit with torch present stays a launch result for the verdict."""
    launch, _ = launcher(tmp_path, lambda spec: result(Termination.EXITED, 1))
    plan_ = plan(tmp_path)
    plan_.out_dir.mkdir(parents=True)
    plan_.log_path.write_text("smoketest: rank 1: checks failed: params_in_sync\n")
    done = launch.launch(plan_, threading.Event())
    assert (done.termination, done.exit_code, done.summary) == (Termination.EXITED, 1, None)


def test_tier_records_docker_provenance_per_world_size(tmp_path: Path) -> None:
    """run_torchrun_tier through a container runner: every container id, runner docker."""
    codes = iter([0, 1])

    def ok(spec: RunSpec) -> RunResult:
        n = int(spec.labels[LABEL_NPROC])
        line = SUMMARY.replace('"world_size": 2', f'"world_size": {n}')
        (spec.run_dir / "metrics.jsonl").write_text(line)
        return result(Termination.EXITED, next(codes))

    runner = ScriptedRunner(ok)
    tier = TierConfig(kind="torchrun", mounts={"/opt": "/opt/x"}, torchrun=TorchrunConfig())
    done = run_torchrun_tier(
        tier, python=None, workdir=tmp_path, run_dir=tmp_path / "run", timeout_s=60, gpus=(),
        cancel=threading.Event(), env={},
        via=LaunchRunner(runner, "7", "weekly", "img:1", grace_s=3),
    )  # fmt: skip
    provenance = done.result.provenance
    assert provenance["runner"] == "docker" and provenance["image_id"] == "sha256:1"
    assert provenance["containers"] == {"1": "c0", "2": "c1"}
    assert provenance["container_id"] == "c1"
    first = runner.specs[0]
    assert first.mounts == {Path("/opt"): "/opt/x"}
    assert (first.grace_s, first.image, first.memory) == (3, "img:1", tier.memory)
    assert first.argv[0] == "python3" and "--local-addr=127.0.0.1" in first.argv


@pytest.mark.torch
def test_installed_program_runs_without_schedctl(tmp_path: Path) -> None:
    """The copied program is standalone: an isolated interpreter runs it with torch alone."""
    need_torch()
    script = install_program(tmp_path / "plugin")
    code = (
        "import runpy, sys\n"
        "sys.modules['scheduler'] = sys.modules['runners'] = None  # importing them would fail\n"
        f"sys.argv = [{str(script)!r}, '--help']\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--inject-fault" in done.stdout


@pytest.mark.parametrize("mounts", [{"rel/site": "/opt/site"}, {"/opt": "opt/site"}])
def test_tier_mounts_must_be_absolute(mounts: dict[str, str]) -> None:
    """The tier's mounts key names absolute host and container paths, or the config fails."""
    with pytest.raises(ValueError, match="absolute"):
        TierConfig(kind="torchrun", mounts=mounts)
