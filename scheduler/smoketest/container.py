"""Run each torchrun launch of the smoketest in its own container, through a container runner.

:class:`ContainerLauncher` is the :class:`~scheduler.smoketest.launcher.RunnerLauncher` of a
container runner. The container gets what a pytest run gets (hardening, the leased GPUs, the
tier's limits and read-only ``mounts``) plus:

* the built-in DDP program as one standalone file in the plugin dir (``train.py`` imports only
  torch and the standard library), so the image needs torch but not schedctl;
* the launch dir as the run dir: torchrun's ``--log-dir`` and the metrics file land on the host,
  where :func:`read_summary` and :func:`rank_tails` read them after the container is gone;
* the launcher's pre-stop for a timeout or silence: ``SIGUSR1`` to torchrun's children (the
  ranks), which the runner sends inside the container; torchrun itself never gets it, since an
  unhandled ``SIGUSR1`` would kill the launcher before the dump.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from runners.base import Runner, RunResult, RunSpec
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.evidence import STACK_LIMIT_BYTES
from scheduler.smoketest.launcher import STACK_WAIT_S, LaunchPlan, RunnerLauncher

PROGRAM_FILE = "schedctl_smoketest.py"
CONTAINER_PYTHON = "python3"
_NO_TORCH = re.compile(r"No module named '?torch")


def install_program(plugin_dir: Path) -> Path:
    """Copy the built-in program into ``plugin_dir`` as a standalone script; return its path."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    target = plugin_dir / PROGRAM_FILE
    shutil.copyfile(Path(__file__).with_name("train.py"), target)
    return target


class ContainerLauncher(RunnerLauncher):
    """Launches through a container ``runner``; each launch is ``template`` with its own command.

    ``template`` carries the run's identity and container settings (image, limits, GPUs, mounts,
    labels); ``template.plugin_dir`` receives the program. ``run_dir``, ``argv``, ``env`` and the
    timeouts come from each :class:`LaunchPlan`.
    """

    def __init__(
        self, runner: Runner, template: RunSpec, *, stack_wait_s: float = STACK_WAIT_S
    ) -> None:
        if template.plugin_dir is None:
            raise ValueError("the container launcher needs template.plugin_dir for the program")
        super().__init__(
            runner,
            template,
            python=CONTAINER_PYTHON,
            builtin_script=install_program(template.plugin_dir),
            stack_wait_s=stack_wait_s,
        )

    @property
    def in_container(self) -> bool:
        return True

    def check(self, plan: LaunchPlan, result: RunResult) -> None:
        """A launcher that cannot import torch is an infra problem, not a failed smoketest."""
        if not result.exit_code or result.termination is not Termination.EXITED:
            return
        try:
            head = plan.log_path.read_bytes()[:STACK_LIMIT_BYTES].decode("utf-8", "replace")
        except OSError:
            return
        missing = _NO_TORCH.search(head)
        if missing:
            image = result.provenance.get("image") or self.template.image or "the default image"
            raise InfraError(
                f"torch is not importable by {CONTAINER_PYTHON} in image {image} "
                f"({head[missing.start() :].splitlines()[0]}); install it in the image or "
                "mount it read-only (tier mounts + env PYTHONPATH)"
            )
