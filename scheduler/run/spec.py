"""What a runner is handed for a pytest tier: the command line, a clean environment, the RunSpec.

The results plugin is copied into the run dir and loaded with ``-p``; container runners map the
host paths in argv and env to their mount points.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# The runner contract (and the logging it brings) is imported by the functions that build specs:
# `schedctl run` calls :func:`launch_plan` before it imports them, so that its test process
# starts while they load.
if TYPE_CHECKING:
    from runners.base import BatchRequest, GpuDevice, RunSpec
    from runners.docker_prewarm import DockerPlan
    from runners.prewarm import Plan
    from scheduler.config import Config, TierConfig


def build_pytest_command(
    *, python: str, tier: TierConfig, markers: str | None, run_dir: Path, plugin_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """Return ``(argv, env)``; paths point at ``run_dir``/``plugin_dir`` on the host.

    Container runners map those host paths to their mount points.
    """
    from runners.base import JUNIT_FILE, PLUGIN_MODULE, RESULTS_FILE

    argv = [
        python,
        "-m",
        "pytest",
        "-p",
        PLUGIN_MODULE,
        "-p",
        "no:cacheprovider",
        f"--junitxml={run_dir / JUNIT_FILE}",
        "-o",
        "junit_family=xunit2",
        "-rfE",
    ]
    expression = markers if markers is not None else tier.markers
    if expression:
        argv += ["-m", expression]
    if tier.coverage:
        sources = tier.coverage_source or ["."]
        argv += [f"--cov={s}" for s in sources]
        argv += [f"--cov-report=xml:{run_dir / 'coverage.xml'}", "--cov-report=term"]
    argv += list(tier.args)
    argv += list(tier.paths)
    env = {**tier.env, "SCHEDCTL_RESULTS": str(run_dir / RESULTS_FILE)}
    # The tier's own PYTHONPATH (a src/ layout, say) is kept, after the plugin's directory.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(plugin_dir), tier.env.get("PYTHONPATH")) if p
    )
    if tier.coverage:
        env["COVERAGE_FILE"] = str(run_dir / ".coverage")
    return argv, env


def base_env(in_container: bool) -> dict[str, str]:
    """A clean environment: the host's PATH/locale only, never the daemon's secrets."""
    env: dict[str, str] = {}
    if not in_container:
        # A container keeps its image's own PATH (conda/CUDA images depend on it).
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def build_pytest_spec(
    config: Config,
    tier: TierConfig,
    *,
    run_id: int,
    tier_name: str,
    markers: str | None,
    timeout_s: float | None,
    workdir: Path,
    run_dir: Path,
    in_container: bool,
    devices: Sequence[GpuDevice],
    host: str,
    batch: BatchRequest | None = None,
    install: bool = True,
) -> RunSpec:
    """The RunSpec of one pytest run of ``tier`` (request overrides: markers, timeout).

    ``install=False``: the results plugin is not copied into ``run_dir / "plugin"`` yet (the
    caller does it before the process starts: :func:`runners.base.install_plugin`).
    """
    from runners.base import CATALOG_MODULE, NONCE_ENV, RunSpec, install_plugin

    plugin_dir = install_plugin(run_dir / "plugin") if install else run_dir / "plugin"
    python = "python3" if in_container else (config.project.python or sys.executable)
    argv, env = build_pytest_command(
        python=python, tier=tier, markers=markers, run_dir=run_dir, plugin_dir=plugin_dir
    )
    env[NONCE_ENV] = secrets.token_hex(16)
    if tier.coverage and config.markers.critical_modules:
        # Which test covers which critical module: a signal for `schedctl markers audit`.
        argv.append("--cov-context=test")
    if (workdir / config.markers.catalog).is_file():
        # The project's marker catalog: the tier selects what plain `pytest -m` with it selects.
        argv[5:5] = ["-p", CATALOG_MODULE]
        env["SCHEDCTL_MARKERS_CATALOG"] = config.markers.catalog
    return RunSpec(
        run_id=str(run_id),
        tier=tier_name,
        argv=argv,
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=tier.timeout if timeout_s is None else timeout_s,
        env={**base_env(in_container), **env},
        plugin_dir=plugin_dir,
        grace_s=min(10.0, config.daemon.grace),
        log_limit_bytes=config.log_limit_bytes,
        gpus=tuple(devices),
        image=tier.image or config.image,
        memory=tier.memory,
        shm_size=tier.shm_size,
        network=tier.network,
        pids_limit=tier.pids_limit,
        output_limit_bytes=tier.output_limit,
        mounts={Path(host_path): target for host_path, target in tier.mounts.items()},
        labels={"schedctl.host": host},
        batch=batch,
    )


def batch_request(
    config: Config, tier_name: str, *, gpus_per_node: int | None = None
) -> BatchRequest:
    """What a tier asks a batch scheduler (Slurm) for; it waits ``gpu.wait`` to be started."""
    from runners.base import BatchRequest

    tier = config.tier(tier_name)
    options = config.slurm_for(tier_name)
    gpus = tier.gpus if isinstance(tier.gpus, int) else 0
    return BatchRequest(
        gpus_per_node=gpus if gpus_per_node is None else gpus_per_node,
        nodes=options.nodes,
        cpus_per_task=options.cpus_per_task,
        partition=options.partition,
        account=options.account,
        qos=options.qos,
        constraint=options.constraint,
        extra_args=tuple(options.sbatch_args),
        pending_timeout_s=config.gpu.wait,
    )


def launch_plan(
    config: Config, tier_name: str, runner: str | None = None
) -> Plan | DockerPlan | None:
    """How to start the test process of a local pytest run of ``tier_name`` before the run is
    recorded (:mod:`runners.prewarm`); ``None`` where that does not apply.

    Only for ``kind: pytest`` tiers on the local runner without GPUs (the leased GPUs are only
    known later, and CUDA reads them at start-up). The environment is the run's as
    :func:`build_pytest_spec` and the local runner make it, without what only exists once the
    run does (``SCHEDCTL_*``, the plugin's ``PYTHONPATH`` entry, ``COVERAGE_FILE``); the local
    runner sends "go" only when the rest is equal, and spawns afresh otherwise.
    """
    tier = config.tier(tier_name)
    chosen = config.runner_for(tier_name, runner)
    if tier.kind == "pytest" and not tier.gpus and chosen == "docker":
        return docker_launch_plan(config, tier_name)
    if tier.kind != "pytest" or tier.gpus or chosen != "local":
        return None
    from runners.local_user import RunAs
    from runners.prewarm import Plan, instance_of
    from scheduler.kernel.errors import InfraError

    user = config.local.run_as()
    try:
        drop = RunAs.named(user).popen_kwargs() if user and os.geteuid() == 0 else {}
    except InfraError:
        return None  # the run itself reports the account problem
    env = {**base_env(in_container=False), **tier.env, "CUDA_VISIBLE_DEVICES": ""}
    return Plan(
        python=config.project.python or sys.executable,
        env=env,
        instance=instance_of(config.state_dir),
        user=drop,
    )


def docker_launch_plan(config: Config, tier_name: str) -> DockerPlan | None:
    """The container a docker run of ``tier_name`` will make, to create and start it before the
    run is recorded (:mod:`runners.docker_prewarm`); ``None`` where that does not apply.

    Only for a ``project.path`` (a git source checks out per run), an image by name (an
    ``@recipe`` is pinned per run), and an engine on a unix socket. Built as
    :func:`build_pytest_spec` builds the run's spec, for a run dir that is never made; the
    runner compares the run's own container with it (:meth:`DockerRunner.template`).
    """
    from runners.base import RunSpec
    from runners.docker import DockerRunner
    from runners.docker_engine import socket_path_from_env
    from runners.docker_prewarm import DockerPlan
    from runners.prewarm import instance_of
    from scheduler.kernel.errors import InfraError

    tier = config.tier(tier_name)
    image = tier.image or config.image
    socket_path = socket_path_from_env()
    workdir = config.project.path
    if workdir is None or image.startswith("@") or socket_path is None:
        return None
    run_dir = config.runs_dir / "0"
    plugin_dir = run_dir / "plugin"
    argv, env = build_pytest_command(
        python="python3", tier=tier, markers=None, run_dir=run_dir, plugin_dir=plugin_dir
    )
    spec = RunSpec(
        run_id="0",
        tier=tier_name,
        argv=argv,
        workdir=workdir,
        run_dir=run_dir,
        timeout_s=tier.timeout,
        env={**base_env(True), **env},
        plugin_dir=plugin_dir,
        image=image,
        memory=tier.memory,
        shm_size=tier.shm_size,
        network=tier.network,
        pids_limit=tier.pids_limit,
        mounts={Path(host_path): target for host_path, target in tier.mounts.items()},
        labels={"schedctl.host": config.host_name},
    )
    runner = DockerRunner(
        user=f"{config.docker.uid}:{config.docker.gid}", instance=instance_of(config.state_dir)
    )
    try:
        template = runner.template(spec)
    except InfraError:
        return None  # the run itself reports the bad mount
    return DockerPlan(template, str(config.runs_dir), socket_path)
