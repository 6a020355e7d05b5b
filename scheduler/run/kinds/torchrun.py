"""Run a ``kind: torchrun`` tier: the 1-vs-N smoketest launches, as a runner-shaped result.

Every launch goes through the tier's runner (:class:`LaunchRunner`): a container runner gives
each launch a fresh hardened container with the leased GPUs; the local runner a process tree
whose every process, ranks included, carries the run's tag, so the run owns them (the GPU leak
check, crash recovery). The runner supervises either way (timeouts, silence, stacks before the
kill), and the verdict then goes through :func:`scheduler.kernel.outcome.decide` like any other run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.base import BatchRequest, GpuDevice, Runner, RunResult, RunSpec
from scheduler.config import TierConfig, TorchrunConfig
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import RunEnding, Termination, VerdictLike
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence
from scheduler.run.spec import base_env, batch_request

if TYPE_CHECKING:
    from scheduler.smoketest.launch import SmoketestOutcome
    from scheduler.smoketest.launcher import Launcher

LOCAL_RUNNER = "torchrun-local"


@dataclass(frozen=True)
class TorchrunTierResult:
    result: RunResult
    verdict: VerdictLike | None
    details: dict[str, Any]


@dataclass(frozen=True)
class LaunchRunner:
    """The runner every launch of the tier goes through, and the run it launches for."""

    runner: Runner
    run_id: str
    tier: str
    image: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    grace_s: float = 10.0
    log_limit_bytes: int = 10 * 1024 * 1024
    batch: BatchRequest | None = None
    """Runners that lease GPUs themselves (Slurm): what each launch asks for."""


def run_torchrun_tier(
    tier: TierConfig,
    *,
    python: str | None,
    workdir: Path,
    run_dir: Path,
    timeout_s: float,
    gpus: Sequence[GpuDevice],
    cancel: threading.Event,
    env: Mapping[str, str],
    via: LaunchRunner | None = None,
) -> TorchrunTierResult:
    """Launch the tier's ``nproc`` list, compare, and report it as one run.

    ``via`` is the runner to launch through (None: a local runner of its own). ``python``
    (default: schedctl's own) runs local launches; container launches use the image's
    ``python3``, and a missing torch there is found from the first launch's output.
    """
    from scheduler.smoketest import format_table, run_smoketest
    from scheduler.smoketest.launcher import local_launcher

    cfg = tier.torchrun or TorchrunConfig()
    started = utcnow()
    interpreter = python or sys.executable
    container = via is not None and via.runner.in_container
    launcher: Launcher | None = None
    if via is not None and container:
        launcher = _container_launcher(tier, via, workdir, run_dir, timeout_s, gpus)
    else:
        missing = _torch_missing(interpreter, env)
        if missing:
            result = RunResult(Termination.INFRA, None, started, utcnow(), missing)
            return TorchrunTierResult(result, None, {})
        if via is not None and via.runner.leases_gpus:
            launcher = _slurm_launcher(tier, via, interpreter, workdir, run_dir)
        elif via is not None:
            launcher = local_launcher(
                interpreter, workdir, run_dir, runner=via.runner, run_id=via.run_id,
                tier=via.tier, gpus=gpus, grace_s=via.grace_s,
                log_limit_bytes=via.log_limit_bytes,
            )  # fmt: skip
    outcome = run_smoketest(
        cfg,
        python=interpreter,
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=timeout_s,
        gpus=gpus,
        cancel=cancel,
        env=env,
        launcher=launcher,
    )
    finished = utcnow()
    details: dict[str, Any] = {"smoketest": outcome.to_json()}
    if outcome.verdict is not None:
        details["comparison"] = outcome.verdict.to_json()
        details["comparison_table"] = format_table(outcome.verdict)
    result = RunResult(
        outcome.termination, outcome.exit_code, started, finished, outcome.message,
        provenance=_provenance(outcome) if container else _local_provenance(outcome, via),
    )  # fmt: skip
    return TorchrunTierResult(result, outcome.verdict, details)


def _slurm_launcher(
    tier: TierConfig, via: LaunchRunner, python: str, workdir: Path, run_dir: Path
) -> Launcher:
    from scheduler.smoketest.slurm import SlurmLauncher

    batch = via.batch or BatchRequest()
    template = RunSpec(
        run_id=via.run_id, tier=via.tier, argv=(), workdir=workdir, run_dir=run_dir,
        timeout_s=0, grace_s=via.grace_s, log_limit_bytes=via.log_limit_bytes, batch=batch,
        memory=tier.memory,
    )  # fmt: skip
    return SlurmLauncher(via.runner, template, python=python, nodes=batch.nodes)


def _container_launcher(
    tier: TierConfig,
    container: LaunchRunner,
    workdir: Path,
    run_dir: Path,
    timeout_s: float,
    gpus: Sequence[GpuDevice],
) -> Launcher:
    from scheduler.smoketest.container import ContainerLauncher

    template = RunSpec(
        run_id=container.run_id,
        tier=container.tier,
        argv=(),
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=timeout_s,
        plugin_dir=run_dir / "plugin",
        grace_s=container.grace_s,
        log_limit_bytes=container.log_limit_bytes,
        gpus=tuple(gpus),
        image=container.image,
        memory=tier.memory,
        shm_size=tier.shm_size,
        network=tier.network,
        pids_limit=tier.pids_limit,
        labels=container.labels,
        mounts={Path(host): target for host, target in tier.mounts.items()},
    )
    return ContainerLauncher(container.runner, template)


def _local_provenance(outcome: SmoketestOutcome, via: LaunchRunner | None) -> dict[str, Any]:
    """Host launches: the run tag their processes carried (the same for every launch); on
    Slurm also each launch's job (by world size) and the N-run's nodes and GPUs."""
    tags = {run.provenance.get("run_tag") for run in outcome.runs.values()} - {None}
    provenance: dict[str, Any] = {"runner": LOCAL_RUNNER}
    if len(tags) == 1:
        provenance["run_tag"] = tags.pop()
    if via is not None and via.runner.leases_gpus and outcome.runs:
        provenance["runner"] = via.runner.alias
        jobs = {str(n): r.provenance.get("slurm_job_id") for n, r in outcome.runs.items()}
        provenance["slurm_jobs"] = jobs
        last = outcome.runs[max(outcome.runs)].provenance
        provenance.update((k, v) for k, v in last.items() if k.startswith(("slurm_", "cuda_")))
    return provenance


def _provenance(outcome: SmoketestOutcome) -> dict[str, Any]:
    """The runner's provenance of the launches: image once, every container by world size."""
    provenance: dict[str, Any] = {"runner": "docker"}
    containers: dict[str, str] = {}
    for n, run in sorted(outcome.runs.items()):
        launch = dict(run.provenance)
        if "container_id" in launch:
            containers[str(n)] = launch.pop("container_id")
        launch.pop("container_name", None)
        launch.pop("first_output_s", None)
        provenance.update(launch)
    if containers:
        provenance["containers"] = containers
        provenance["container_id"] = containers[max(containers, key=int)]
    return provenance


def _torch_missing(python: str, env: Mapping[str, str]) -> str:
    """Why ``python`` cannot run the smoketest (an infra problem, not a test failure), or ''."""
    try:
        proc = subprocess.run(
            [python, "-c", "import torch, torch.distributed"],
            env=dict(env), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"torch is not importable by {python} ({last}); install it in the project's python"
    return ""


class TorchrunKind:
    """The weekly smoketest kind: a 1-GPU and an N-GPU launch, compared into a verdict."""

    name = "torchrun"

    def prepare(self, ctx: RunContext) -> Prepared:
        runner, tier = ctx.runner, ctx.tier
        image = tier.image or ctx.config.image
        via = LaunchRunner(
            runner, str(ctx.run_id), ctx.tier_name, image,
            labels={"schedctl.host": ctx.host},
            grace_s=min(10.0, ctx.config.daemon.grace),
            log_limit_bytes=ctx.config.log_limit_bytes,
            batch=batch_request(ctx.config, ctx.tier_name) if runner.leases_gpus else None,
        )  # fmt: skip

        def execute(cancel: threading.Event) -> Finished:
            done = run_torchrun_tier(
                tier,
                python=ctx.config.project.python,
                workdir=ctx.workdir,
                run_dir=ctx.run_dir,
                timeout_s=ctx.effective_timeout_s,
                gpus=tuple(ctx.devices),
                cancel=cancel,
                env={**base_env(runner.in_container), **tier.env},
                via=via,
            )
            result = done.result
            ending = RunEnding(
                result.termination, result.exit_code, result.message, verdict=done.verdict
            )
            return Finished(ending, Evidence(result, details=done.details))

        provenance = {
            "runner": runner.alias if runner.in_container or runner.leases_gpus else LOCAL_RUNNER,
            "image": image if runner.in_container else None,
        }
        return Prepared(provenance, execute)
