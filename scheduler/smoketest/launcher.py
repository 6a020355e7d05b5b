"""Run one torchrun launch through a runner, which supervises it and owns its processes.

Each :class:`LaunchPlan` becomes one ``RunSpec`` of the runner (timeout, silence, ``SIGUSR1`` to
the ranks before the kill, no leftovers): :class:`RunnerLauncher` through the local runner, whose
run tag every rank inherits -- torchrun starts the ranks in sessions of their own, out of reach of
the launcher's process group, and the tag is what finds them (GPU leak check, crash recovery) --
and ``scheduler.smoketest.container.ContainerLauncher`` in a container per launch, as the docker
runner's runs.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runners.base import GpuDevice, PreStop, Runner, RunResult, RunSpec
from runners.local import LocalRunner
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.evidence import (
    TorchrunResult,
    dumped_stacks,
    exit_message,
    rank_tails,
    read_summary,
)

LABEL_NPROC = "schedctl.torchrun.nproc"
STACK_WAIT_S = 2.0
"""How long the ranks get to write their stacks after ``SIGUSR1``, before the stop."""
STACK_STAGGER_S = 0.2
"""Between one rank's ``SIGUSR1`` and the next: dumps on one console do not interleave."""


@dataclass(frozen=True)
class LaunchPlan:
    """One torchrun launch, ready to run: host paths throughout (a container runner remaps)."""

    nproc: int
    argv: list[str]
    env: dict[str, str]
    out_dir: Path
    metrics_path: Path
    rank_dir: Path
    timeout_s: float
    silence_timeout_s: float

    @property
    def log_path(self) -> Path:
        return self.out_dir / "output.log"


class Launcher(Protocol):
    """Runs a :class:`LaunchPlan` somewhere and reports what it left behind.

    ``python`` starts torchrun where the launch runs; ``builtin_script`` is the built-in program
    as a file (``None``: ``-m scheduler.smoketest``); ``in_container`` drops what only the host
    needs (schedctl on ``PYTHONPATH``, ``CUDA_VISIBLE_DEVICES``) and rendezvous on loopback.
    """

    @property
    def python(self) -> str: ...

    @property
    def builtin_script(self) -> Path | None: ...

    @property
    def in_container(self) -> bool: ...

    def launch(self, plan: LaunchPlan, cancel: threading.Event) -> TorchrunResult:
        """Run ``plan`` to the end; raise :class:`InfraError` when it could not run at all."""
        ...


class RunnerLauncher:
    """Runs each :class:`LaunchPlan` as one ``RunSpec`` of ``runner``: ``template`` (the run's
    identity, GPUs and limits) with the plan's command, launch dir and timeouts, plus a
    :class:`PreStop` that sends ``SIGUSR1`` to the ranks (torchrun's children; the built-in
    program dumps every thread's stack through faulthandler) before a timeout or silence stop.

    With a local runner the launch runs on the host with ``python``; the runner's run tag marks
    the launcher and every rank, so the run owns them (GPU leak check, crash recovery).
    """

    def __init__(
        self,
        runner: Runner,
        template: RunSpec,
        *,
        python: str,
        builtin_script: Path | None = None,
        stack_wait_s: float = STACK_WAIT_S,
    ) -> None:
        self.runner = runner
        self.template = template
        self.python = python
        self.builtin_script = builtin_script
        self.stack_wait_s = stack_wait_s

    @property
    def in_container(self) -> bool:
        return self.runner.in_container

    def spec(self, plan: LaunchPlan) -> RunSpec:
        return dataclasses.replace(
            self.template,
            argv=list(plan.argv),
            env=plan.env,
            run_dir=plan.out_dir,
            timeout_s=plan.timeout_s,
            silence_timeout_s=plan.silence_timeout_s,
            labels={**self.template.labels, LABEL_NPROC: str(plan.nproc)},
            pre_stop=PreStop(
                signal=signal.SIGUSR1, wait_s=self.stack_wait_s, stagger_s=STACK_STAGGER_S
            ),
        )

    def launch(self, plan: LaunchPlan, cancel: threading.Event) -> TorchrunResult:
        """Run ``plan`` through the runner and collect its evidence from the launch dir.

        Raises:
            InfraError: the launch could not run at all (see also :meth:`check`).
        """
        result = self.runner.run(self.spec(plan), cancel)
        if result.termination is Termination.INFRA:
            raise InfraError(result.message)
        if result.termination is Termination.SCHEDULER:
            raise InfraError(f"Slurm ended the launch ({result.scheduler_state}): {result.message}")
        self.check(plan, result)
        stacks = ""
        if result.termination is Termination.TIMEOUT:
            stacks = dumped_stacks(plan.rank_dir, plan.log_path)
        message = result.message or (
            exit_message(result.exit_code) if result.exit_code is not None else ""
        )
        return TorchrunResult(
            nproc=plan.nproc,
            termination=result.termination,
            exit_code=result.exit_code,
            duration_s=result.duration_s,
            summary=read_summary(plan.metrics_path),
            rank_logs=rank_tails(plan.rank_dir),
            stacks=stacks,
            message=message + ("; Python stacks captured" if stacks else ""),
            log_path=plan.log_path,
            log_truncated=result.log_truncated,
            provenance=result.provenance,
        )

    def check(self, plan: LaunchPlan, result: RunResult) -> None:
        """Raise :class:`InfraError` when the launch's result shows it could not run at all."""


def local_launcher(
    python: str,
    workdir: Path,
    run_dir: Path,
    *,
    runner: Runner | None = None,
    run_id: str | None = None,
    tier: str = "smoketest",
    gpus: Sequence[GpuDevice] = (),
    grace_s: float = 5.0,
    log_limit_bytes: int = 10 * 1024 * 1024,
) -> RunnerLauncher:
    """Launches on this host through ``runner`` (default: a local runner of its own), as run
    ``run_id`` (default: the run dir's name) of ``tier``."""
    template = RunSpec(
        run_id=run_id or run_dir.name,
        tier=tier,
        argv=(),
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=0,
        grace_s=grace_s,
        log_limit_bytes=log_limit_bytes,
        gpus=tuple(gpus),
    )
    return RunnerLauncher(runner or LocalRunner(), template, python=python)
