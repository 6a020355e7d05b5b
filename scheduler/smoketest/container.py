"""Run each torchrun launch of the smoketest in its own container, through a container runner.

The container gets what a pytest run gets (hardening, the leased GPUs, the tier's limits and
read-only ``mounts``) plus:

* the built-in DDP program as one standalone file in the plugin dir (``train.py`` imports only
  torch and the standard library), so the image needs torch but not schedctl;
* the launch dir as the run dir: torchrun's ``--log-dir`` and the metrics file land on the host,
  where :func:`read_summary` and :func:`rank_tails` read them after the container is gone;
* a pre-stop command for a timeout or silence: ``SIGUSR1`` to torchrun's children (the ranks; the
  built-in program dumps every thread's stack through faulthandler), then a short wait; torchrun
  itself never gets it, since an unhandled ``SIGUSR1`` would kill the launcher before the dump.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import threading
from pathlib import Path

from runners.base import Runner, RunResult, RunSpec
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.launch import LaunchPlan
from scheduler.smoketest.supervise import (
    TorchrunResult,
    exit_message,
    rank_tails,
    read_summary,
)

PROGRAM_FILE = "schedctl_smoketest.py"
CONTAINER_PYTHON = "python3"
LABEL_NPROC = "schedctl.torchrun.nproc"
STACK_LIMIT_BYTES = 64 * 1024
# The launcher is the python process running torch.distributed.run; anchoring at the start skips
# the container's init (``docker-init -- python3 -m ...``, which would forward the signal to the
# launcher), and ``[.]`` keeps the pattern from matching the shell that carries it.
_LAUNCHER = "^[^ ]*python[^ ]* -m torch[.]distributed[.]run"
_SIGNAL_RANKS = "pkill -USR1 -P \"$(pgrep -o -f '" + _LAUNCHER + "')\"; sleep {wait:g}"
_STACK_HEADER = re.compile(
    r"^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):", re.M
)
_NO_TORCH = re.compile(r"No module named '?torch")


def install_program(plugin_dir: Path) -> Path:
    """Copy the built-in program into ``plugin_dir`` as a standalone script; return its path."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    target = plugin_dir / PROGRAM_FILE
    shutil.copyfile(Path(__file__).with_name("train.py"), target)
    return target


def stack_dump_command(wait_s: float) -> list[str]:
    """The pre-stop command: ``SIGUSR1`` to the ranks, then ``wait_s`` for their dumps."""
    return ["sh", "-c", _SIGNAL_RANKS.format(wait=wait_s)]


def dumped_stacks(rank_dir: Path) -> str:
    """Each rank's faulthandler dump, from the first stack header in its stderr log on."""
    parts = []
    for path in sorted(rank_dir.glob("*/attempt_*/*/stderr.log")):
        text = path.read_bytes()[-4 * STACK_LIMIT_BYTES :].decode("utf-8", "replace")
        found = _STACK_HEADER.search(text)
        if found and path.parent.name.isdigit():
            dump = text[found.start() :][:STACK_LIMIT_BYTES]
            parts.append(f"--- rank {path.parent.name} (stderr after SIGUSR1) ---\n{dump}")
    return "\n".join(parts)


class ContainerLauncher:
    """Launches through a container ``runner``; each launch is ``template`` with its own command.

    ``template`` carries the run's identity and container settings (image, limits, GPUs, mounts,
    labels); ``template.plugin_dir`` receives the program. ``run_dir``, ``argv``, ``env`` and the
    timeouts come from each :class:`LaunchPlan`.
    """

    python = CONTAINER_PYTHON
    in_container = True

    def __init__(self, runner: Runner, template: RunSpec, *, stack_wait_s: float = 2.0) -> None:
        if template.plugin_dir is None:
            raise ValueError("the container launcher needs template.plugin_dir for the program")
        self.runner = runner
        self.template = template
        self.stack_wait_s = stack_wait_s
        self.builtin_script: Path | None = install_program(template.plugin_dir)

    def spec(self, plan: LaunchPlan) -> RunSpec:
        return dataclasses.replace(
            self.template,
            argv=list(plan.argv),
            env=plan.env,
            run_dir=plan.out_dir,
            timeout_s=plan.timeout_s,
            silence_timeout_s=plan.silence_timeout_s,
            labels={**self.template.labels, LABEL_NPROC: str(plan.nproc)},
            pre_stop_exec=stack_dump_command(self.stack_wait_s),
        )

    def launch(self, plan: LaunchPlan, cancel: threading.Event) -> TorchrunResult:
        """Run ``plan`` in a container and collect its evidence from the launch dir.

        Raises:
            InfraError: the container could not run, or the image's python has no torch.
        """
        result = self.runner.run(self.spec(plan), cancel)
        if result.termination is Termination.INFRA:
            raise InfraError(result.message)
        if result.exit_code and result.termination is Termination.EXITED:
            self._check_torch(plan, result)
        stacks = dumped_stacks(plan.rank_dir) if result.termination is Termination.TIMEOUT else ""
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

    def _check_torch(self, plan: LaunchPlan, result: RunResult) -> None:
        """A launcher that cannot import torch is an infra problem, not a failed smoketest."""
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
