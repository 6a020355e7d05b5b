"""The Slurm command line, as the Slurm runner speaks to it: the one module that runs ``sbatch``,
``scontrol``, ``squeue``, ``scancel`` and ``srun``.

Every failure of those programs (not installed, controller down, a refused submission, a hung
call) becomes an :class:`~scheduler.kernel.errors.InfraError` here and nowhere else; what they
print is parsed defensively (a field missing or malformed reads as unknown, never as a verdict).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.kernel.errors import InfraError

CALL_TIMEOUT_S = 30.0
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
    }
)  # fmt: skip
WAITING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED"})
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)")
_GRES_IDX = re.compile(r"gpu(?::[\w-]+)?:\d+\(IDX:([\d,\-]+)\)")


@dataclass(frozen=True)
class JobInfo:
    """One job as ``scontrol show job -d -o`` tells it (the fields the runner needs)."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    nodes: str = ""
    partition: str = ""
    gpu_indices: Sequence[int] = field(default_factory=tuple)
    """The GPUs Slurm allocated on the batch node (gres ``IDX``), as ``CUDA_VISIBLE_DEVICES``."""
    gres: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES


def parse_job(text: str) -> JobInfo | None:
    """A :class:`JobInfo` from one ``-o`` line of ``scontrol show job -d``; None if unreadable.

    ``Command=`` and the paths after it may hold spaces and ``=``: only fields before it count.
    """
    head = text.split(" Command=", 1)[0]
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(head):
        fields.setdefault(key, value)
    job_id, state = fields.get("JobId", ""), fields.get("JobState", "")
    if not job_id.isdigit() or not state:
        return None
    exit_code = signal = None
    code = re.fullmatch(r"(\d+):(\d+)", fields.get("ExitCode", ""))
    if code:
        exit_code, signal = int(code.group(1)), int(code.group(2))
    indices: list[int] = []
    for match in _GRES_IDX.finditer(head):
        indices.extend(_expand_range(match.group(1)))
    return JobInfo(
        job_id=job_id,
        state=state.upper(),
        reason=fields.get("Reason", ""),
        exit_code=exit_code,
        signal=signal,
        nodes=fields.get("NodeList", "") if fields.get("NodeList") != "(null)" else "",
        partition=fields.get("Partition", ""),
        gpu_indices=tuple(indices),
        gres=fields.get("GRES", ""),
    )


def _expand_range(text: str) -> list[int]:
    """``0-1,3`` -> ``[0, 1, 3]``."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            out.extend(range(int(low), int(high or low) + 1))
    return out


class SlurmCli:
    """Runs the Slurm client programs; every failure is an :class:`InfraError`.

    Args:
        bin_dir: where the programs are (None: on ``PATH``).
        timeout_s: bound on each call (a controller that does not answer must not hang a run).
    """

    def __init__(self, bin_dir: Path | None = None, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s

    def _program(self, name: str) -> str:
        return str(self.bin_dir / name) if self.bin_dir else name

    def call(self, name: str, args: Sequence[str], *, check: bool = True) -> str:
        argv = [self._program(name), *args]
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=self.timeout_s, check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise InfraError(f"Slurm is not installed here: {argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise InfraError(f"{name} did not answer within {self.timeout_s:g}s") from None
        except OSError as exc:
            raise InfraError(f"cannot run {argv[0]}: {exc}") from exc
        if check and done.returncode != 0:
            why = " ".join((done.stderr or done.stdout).split())[:300] or f"exit {done.returncode}"
            raise InfraError(f"{name} failed: {why}")
        return done.stdout

    def submit(self, args: Sequence[str], script: Path) -> str:
        """``sbatch --parsable``; the job id."""
        out = self.call("sbatch", ["--parsable", *args, str(script)]).strip()
        job_id = out.split(";", 1)[0]
        if not job_id.isdigit():
            raise InfraError(f"sbatch printed no job id: {out[:200]!r}")
        return job_id

    def job(self, job_id: str) -> JobInfo | None:
        """The job's state; None once Slurm no longer knows it (purged after ``MinJobAge``)."""
        out = self.call("scontrol", ["show", "job", "-d", "-o", job_id], check=False)
        return parse_job(out.strip()) if out.strip() else None

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        """``scancel`` the job (or send ``signal`` to its steps); a job already gone is fine."""
        args = [f"--signal={signal}"] if signal else []
        self.call("scancel", [*args, job_id], check=False)

    def jobs_named(self, prefix: str) -> dict[str, str]:
        """Job id -> name of every queued or running job whose name starts with ``prefix``."""
        out = self.call("squeue", ["-h", "-o", "%i %j"])
        found = {}
        for row in out.splitlines():
            job_id, _, name = row.strip().partition(" ")
            if job_id.isdigit() and name.startswith(prefix):
                found[job_id] = name
        return found


def slurm_available(cli: SlurmCli | None = None) -> tuple[bool, str]:
    """Whether a Slurm controller answers here, and why not."""
    try:
        out = (cli or SlurmCli(timeout_s=10)).call("sinfo", ["-h", "-o", "%T"])
    except InfraError as exc:
        return False, str(exc)
    states = set(out.split())
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return False, f"no usable Slurm node (node states: {', '.join(sorted(states)) or 'none'})"
    return True, ""


__all__ = ["FINAL_STATES", "JobInfo", "SlurmCli", "parse_job", "slurm_available"]
