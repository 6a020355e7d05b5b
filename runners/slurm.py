"""Run the command as a Slurm batch job; Slurm leases the GPUs and picks the node.

Plugin alias: slurm. A run is one ``sbatch`` job named ``schedctl-<instance>-<run id>`` (the
instance is the daemon's, a hash of its state dir, so recovery touches only its own jobs) whose
batch script exports the run's environment -- with the run tag ``SCHEDCTL_RUN=<instance>:<run
id>`` that every process of the job inherits -- and ``exec``s the command in the workdir. The run
dir must be on a path the compute nodes share (``slurm.shared_dir``): Slurm writes the job's
output there and the runner copies it, live, into the bounded ``output.log``, so progress and
the silence timeout work as for the other runners.

Supervision: while the job pends, a cancel ``scancel``s it and ``pending_timeout_s`` (the
config's ``gpu.wait``) ends it as ``PENDING``; once it runs, :meth:`Runner._supervise` applies
the timeout (counted from the start, not the submission), silence, pre-stop and cancel, and
stops it with ``scancel``. Slurm's own ``--time`` is set past our deadline, as a backstop only.
How Slurm ended the job (its state) is reported as ``Termination.SCHEDULER`` plus the state;
:func:`scheduler.kernel.outcome.decide` maps it to an outcome. ``COMPLETED``/``FAILED`` jobs
are ``EXITED`` with the command's exit code, except a step that slurmstepd killed for exceeding
its memory limit (OverMemoryKill: the state says ``FAILED``; its log line and the SIGKILL say
``OUT_OF_MEMORY``).

Pre-stop evidence is gathered on this host (the compute node of a single-node cluster): the
signal goes to the children of the job's commands, found by the run tag in ``/proc``; a
pre-stop command runs inside the allocation with ``srun --overlap``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from runners.base import (
    PRE_STOP_MARK,
    BatchRequest,
    BoundedLog,
    InFlight,
    PreStop,
    Runner,
    RunResult,
    RunSpec,
)
from runners.local import carries_tag, process_environs
from runners.prewarm import RUN_TAG_ENV
from runners.slurm_support import JobInfo, SlurmCli
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

JOB_PREFIX = "schedctl-"
RAW_OUTPUT = "slurm.out"
SCRIPT = "slurm-job.sh"
STOP_SLACK_S = 15.0
"""Beyond the grace, how long a cancelled job may take to end (Slurm's KillWait, epilog)."""
_OOM_LINE = re.compile(
    rb"^slurmstepd(?:-\S+)?: error: .*(?:exceeded memory limit|Exceeded job memory)", re.M
)
_STEPD_LINE = re.compile(rb"^slurmstepd(?:-\S+)?: error: \*\*\* (.+?) \*\*\*\s*$", re.M)
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.I)


class SlurmRunner(Runner):
    """Runs each RunSpec as one Slurm batch job. Plugin alias: slurm.

    Args:
        instance: names the daemon instance in job names and the run tag (None: this object).
        poll_s: how often the job's state and output are read.
        clock: monotonic clock for pending wait, deadline and silence.
        cli: the Slurm command line (tests point it elsewhere).
        proc_root: where ``/proc`` is, for :meth:`owns` and pre-stop signals.
    """

    alias = "slurm"
    leases_gpus = True

    def __init__(
        self,
        *,
        instance: str | None = None,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        cli: SlurmCli | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        if instance is not None and (":" in instance or not instance or " " in instance):
            raise ValueError(f"a runner instance is a name without ':' or spaces, got {instance!r}")
        self.instance = instance or f"anon-{uuid.uuid4().hex[:12]}"
        self.poll_s = poll_s
        self._clock = clock
        self.cli = cli or SlurmCli()
        self.proc_root = proc_root
        self._in_flight = InFlight("Slurm runner")

    # -- ownership -------------------------------------------------------------------------------

    def job_name(self, run_id: str) -> str:
        return f"{JOB_PREFIX}{self.instance}-{run_id}"

    def tag(self, run_id: str) -> str:
        return f"{self.instance}:{run_id}"

    def owns(self, pid: int, run_id: str) -> bool:
        return carries_tag(pid, self.tag(run_id), self.proc_root)

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """``scancel`` every job of this instance whose run is not live and wait (bounded) until
        they have left the queue; their run ids."""
        prefix = f"{JOB_PREFIX}{self.instance}-"
        live = set(live_run_ids) | self._in_flight.ids()
        reaped: dict[str, str] = {}
        for job_id, name in self.cli.jobs_named(prefix).items():
            run_id = name[len(prefix) :]
            if run_id not in live:
                self.cli.cancel(job_id)
                reaped[job_id] = run_id
        deadline = time.monotonic() + STOP_SLACK_S
        while reaped and time.monotonic() < deadline:
            if not set(reaped) & set(self.cli.jobs_named(prefix)):
                break
            time.sleep(self.poll_s)
        return sorted(set(reaped.values()))

    # -- lifecycle -------------------------------------------------------------------------------

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        batch = spec.batch or BatchRequest()
        started = utcnow()
        with (
            self._in_flight.hold(spec.run_id),
            BoundedLog(spec.log_path, spec.log_limit_bytes) as log,
        ):
            raw = spec.run_dir / RAW_OUTPUT
            raw.unlink(missing_ok=True)
            script = self._write_script(spec)
            job_id = self.cli.submit(self._sbatch_args(spec, batch, raw), script)
            job = _SlurmJob(self, spec, job_id, log, raw)
            state = ""
            try:
                waited = job.wait_start(cancel, batch.pending_timeout_s)
                if waited is not None:
                    termination, message, state = waited
                else:
                    started = utcnow()
                    termination, message = self._supervise(job, spec, cancel, self._clock)
            finally:
                job.ensure_ended(spec.grace_s)
                job.drain()
            info = job.info
            truncated = log.truncated
        exit_code = _exit_code(info)
        if termination is Termination.EXITED:
            termination, message, state = job.classify()
        provenance = _provenance(self, spec, info, job.allocated)
        return RunResult(
            termination, exit_code, started, utcnow(), message, truncated, provenance, state
        )

    def _write_script(self, spec: RunSpec) -> Path:
        env = {**spec.env, RUN_TAG_ENV: self.tag(spec.run_id)}
        lines = ["#!/bin/bash", f"# schedctl run {spec.run_id} of tier {spec.tier}"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items() if _ENV_NAME.match(k)]
        lines += [
            f"cd {shlex.quote(str(spec.workdir))} || exit 125",
            "exec " + " ".join(shlex.quote(str(a)) for a in spec.argv),
        ]
        script = spec.run_dir / SCRIPT
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o700)
        return script

    def _sbatch_args(self, spec: RunSpec, batch: BatchRequest, raw: Path) -> list[str]:
        # Slurm's --time is a backstop past our own deadline (it counts in whole minutes).
        minutes = math.ceil((spec.timeout_s + spec.grace_s + STOP_SLACK_S) / 60) + 1
        args = [
            f"--job-name={self.job_name(spec.run_id)}",
            f"--comment=schedctl run {spec.run_id} tier {spec.tier} instance {self.instance}",
            "--export=NONE",
            "--no-requeue",
            f"--chdir={spec.workdir}",
            f"--output={raw}",
            f"--time={minutes}",
            f"--nodes={batch.nodes}",
            "--ntasks-per-node=1",
        ]
        if spec.memory:
            args.append(f"--mem={slurm_memory(spec.memory)}")
        if batch.gpus_per_node:
            args.append(f"--gres=gpu:{batch.gpus_per_node}")
        if batch.cpus_per_task:
            args.append(f"--cpus-per-task={batch.cpus_per_task}")
        for flag in ("partition", "account", "qos", "constraint"):
            value = getattr(batch, flag)
            if value:
                args.append(f"--{flag}={value}")
        return [*args, *batch.extra_args]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def slurm_memory(value: str) -> str:
    """A docker-style size (``512m``, ``4g``, ``100M``; no unit: bytes) as sbatch's ``--mem``."""
    match = _MEMORY.match(value)
    if not match:
        raise InfraError(f"memory {value!r} is not a size like 512m or 4g")
    number, unit = float(match.group(1)), match.group(2).lower()
    mib = (
        number * {"": 1 / 2**20, "b": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024, "t": 2**20}[unit]
    )
    return f"{max(1, math.ceil(mib))}M"


def _exit_code(info: JobInfo | None) -> int | None:
    if info is None or info.exit_code is None:
        return None
    return -info.signal if info.signal else info.exit_code


def _provenance(
    runner: SlurmRunner, spec: RunSpec, info: JobInfo | None, allocated: JobInfo | None
) -> dict[str, object]:
    provenance: dict[str, object] = {"run_tag": runner.tag(spec.run_id)}
    if info is not None:
        provenance.update(
            slurm_job_id=info.job_id,
            slurm_nodes=info.nodes,
            slurm_partition=info.partition,
            slurm_state=info.state,
        )
    if allocated is not None:
        provenance["slurm_gres"] = allocated.gres
        provenance["cuda_visible_devices"] = ",".join(map(str, allocated.gpu_indices))
    return provenance


class _SlurmJob:
    """One submitted job, as :meth:`Runner._supervise` drives it (:class:`Supervised`)."""

    def __init__(
        self, runner: SlurmRunner, spec: RunSpec, job_id: str, log: BoundedLog, raw: Path
    ) -> None:
        self.runner = runner
        self.spec = spec
        self.job_id = job_id
        self.log = log
        self.raw = raw
        self.info: JobInfo | None = None
        self.allocated: JobInfo | None = None
        """The job as last seen holding its GPUs (the gres detail vanishes at the end)."""
        self.last_output_at = runner._clock()
        self._offset = 0
        self._tail = b""

    # -- state and output ------------------------------------------------------------------------

    def refresh(self) -> JobInfo:
        info = self.runner.cli.job(self.job_id)
        if info is None:
            raise InfraError(f"Slurm no longer knows job {self.job_id}")
        self.info = info
        if info.gpu_indices:  # only shown while the job holds them
            self.allocated = info
        return info

    def drain(self) -> None:
        """Copy what the job wrote since the last look into the bounded log."""
        try:
            with self.raw.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return
        if chunk:
            self._offset += len(chunk)
            self._tail = (self._tail + chunk)[-65536:]
            self.last_output_at = self.runner._clock()
            self.log.write(chunk)

    def _tick(self, until: float) -> bool:
        """Drain, look at the job; sleep up to the next poll unless ``until`` is reached."""
        self.drain()
        if self.refresh().final:
            self.drain()
            return True
        left = until - self.runner._clock()
        if left > 0:
            time.sleep(min(self.runner.poll_s, left))
        return False

    def wait_start(
        self, cancel: threading.Event, pending_timeout_s: float
    ) -> tuple[Termination, str, str] | None:
        """Wait while Slurm keeps the job waiting. None once it runs (or ended on its own)."""
        clock = self.runner._clock
        t0 = clock()
        while True:
            self.drain()
            info = self.refresh()
            if not info.waiting:
                return None
            if cancel.is_set():
                self.runner.cli.cancel(self.job_id)
                return Termination.CANCELLED, "cancelled while pending in Slurm", ""
            if clock() - t0 >= pending_timeout_s:
                self.runner.cli.cancel(self.job_id)
                why = f"still pending after {clock() - t0:.0f}s (Slurm reason: {info.reason})"
                return Termination.SCHEDULER, why, "PENDING"
            time.sleep(self.runner.poll_s)

    # -- Supervised ------------------------------------------------------------------------------

    def wait(self, timeout_s: float) -> bool:
        until = self.runner._clock() + timeout_s
        while True:
            if self._tick(until):
                return True
            if self.runner._clock() >= until:
                return False

    def stop(self, grace_s: float) -> None:
        self.runner.cli.cancel(self.job_id)
        self.wait(grace_s + STOP_SLACK_S)

    def ensure_ended(self, grace_s: float) -> None:
        """Whatever happened (an error included), no job of the run is left in the queue."""
        with contextlib.suppress(InfraError):
            if self.info is None or not self.info.final:
                self.stop(grace_s)

    def pre_stop(self, pre_stop: PreStop) -> None:
        targets = self._children_of_commands()
        what = []
        if pre_stop.signal is not None:
            what.append(f"{pre_stop.signal.name} to pids {targets}")
        if pre_stop.command:
            what.append(f"run {list(pre_stop.command)}")
        self.log.write(f"\n{PRE_STOP_MARK} {', then '.join(what) or 'nothing'}]\n".encode())
        if pre_stop.signal is not None:
            for pid in targets:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, pre_stop.signal)
                if pre_stop.stagger_s:
                    time.sleep(pre_stop.stagger_s)
        if pre_stop.command:
            self._pre_stop_command(pre_stop)

    def _children_of_commands(self) -> list[int]:
        """Tagged processes whose parent is one of the job's commands (a tagged process whose
        own parent, slurmstepd, is not tagged): the batch command's and each step task's."""
        proc_root = self.runner.proc_root
        needle = f"{RUN_TAG_ENV}={self.runner.tag(self.spec.run_id)}".encode()
        tagged = {pid for pid, env in process_environs(proc_root) if needle in env.split(b"\0")}
        parents = {pid: _parent(proc_root, pid) for pid in tagged}
        commands = {pid for pid, parent in parents.items() if parent not in tagged}
        return sorted(p for p, parent in parents.items() if parent in commands)

    def _pre_stop_command(self, pre_stop: PreStop) -> None:
        argv = ["--jobid", self.job_id, "--overlap", "--nodes=1", "--ntasks=1", "--export=ALL"]
        try:
            out = self.runner.cli.call("srun", [*argv, *pre_stop.command], check=False)
        except InfraError as exc:
            out = f"[schedctl: pre-stop command failed: {exc}]\n"
        self.log.write(out.encode())

    # -- how it ended ----------------------------------------------------------------------------

    def classify(self) -> tuple[Termination, str, str]:
        """A job that ended on its own: exited (with its code), or ended by Slurm (its state)."""
        info = self.info
        if info is None:
            return Termination.INFRA, f"Slurm job {self.job_id}: no final state", ""
        killed = info.signal == signal.SIGKILL or info.exit_code == 128 + signal.SIGKILL
        if info.state == "OUT_OF_MEMORY" or (killed and _OOM_LINE.search(self._tail)):
            return Termination.SCHEDULER, _stepd_says(self._tail), "OUT_OF_MEMORY"
        if info.state in ("COMPLETED", "FAILED") and info.reason != "JobLaunchFailure":
            return Termination.EXITED, "", ""
        if info.state == "FAILED":
            return Termination.SCHEDULER, _stepd_says(self._tail), "LAUNCH_FAILED"
        reason = info.reason if info.reason not in ("", "None") else ""
        said = _stepd_says(self._tail)
        if info.state == "CANCELLED":
            said = said or "Slurm does not say by whom"
            said = f"not by schedctl; {said}"
        return Termination.SCHEDULER, "; ".join(x for x in (reason, said) if x), info.state


def _stepd_says(tail: bytes) -> str:
    """slurmstepd's last ``*** ... ***`` line (``JOB 7 ON n1 CANCELLED AT ... DUE TO ...``)."""
    found = _STEPD_LINE.findall(tail)
    return found[-1].decode(errors="replace")[:300] if found else ""


def _parent(proc_root: Path, pid: int) -> int | None:
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


__all__ = ["SlurmRunner", "slurm_memory"]
