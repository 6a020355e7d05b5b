"""Run a ``kind: torchrun`` tier: one torchrun launch per ``nproc``, then the comparison.

:func:`build_torchrun_argv` and :func:`smoketest_env` build each launch's command line and
environment as a :class:`LaunchPlan`; a :class:`Launcher` (:mod:`.launcher`) runs it through a
runner, locally or in a container per launch, and reports a :class:`TorchrunResult`.

Layout of ``run_dir``::

    n1/output.log  n1/metrics.jsonl  n1/ranks/<id>/attempt_0/<rank>/{stdout,stderr}.log
    n2/...
    smoketest.json      the verdict and every launch's evidence
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runners.base import GpuDevice
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.compare import Verdict, compare
from scheduler.smoketest.evidence import TorchrunResult
from scheduler.smoketest.launcher import Launcher, LaunchPlan, local_launcher

if TYPE_CHECKING:
    from scheduler.config import TorchrunConfig

BUILTIN = "builtin"
BUILTIN_MODULE = "scheduler.smoketest"
MONITOR_INTERVAL_S = 0.5
SUMMARY_FILE = "smoketest.json"
METRICS_FILE = "metrics.jsonl"
# torch's own collective timeout stays above ours, so that our supervisor sees a hang first and
# captures the stacks; it still ends a hang when nothing supervises the ranks.
PG_TIMEOUT_MARGIN_S = 60.0

LOOPBACK = "127.0.0.1"

Fault = Literal["none", "desync", "hang"]


@dataclass(frozen=True)
class SmoketestOutcome:
    """Every launch of one torchrun tier and the verdict over them.

    ``termination`` is ``TIMEOUT`` if any launch timed out or went silent, ``CANCELLED`` if the
    tier was cancelled, ``OOM`` if a container was OOM-killed, ``INFRA`` if a launch could not
    run at all, ``EXITED`` otherwise; then ``verdict`` decides ``passed``/``failed``.
    """

    termination: Termination
    exit_code: int | None
    verdict: Verdict | None
    runs: dict[int, TorchrunResult] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "termination": self.termination.value,
            "exit_code": self.exit_code,
            "verdict": self.verdict.to_json() if self.verdict else None,
            "runs": {str(n): run.to_json() for n, run in sorted(self.runs.items())},
            "message": self.message,
        }


def resolve_nproc(spec_list: Sequence[int | str], leased_gpus: int, cpu_procs: int) -> list[int]:
    """Process counts to launch, in order, without repeats.

    ``"all"`` means every leased GPU, or ``cpu_procs`` processes when no GPU is leased.

    Raises:
        ValueError: a count below 1, or more processes than leased GPUs (NCCL needs one GPU each).
    """
    counts: list[int] = []
    for spec in spec_list:
        n = (leased_gpus or cpu_procs) if spec == "all" else int(spec)
        if n < 1:
            raise ValueError(f"nproc must be at least 1, got {spec!r}")
        if leased_gpus and n > leased_gpus:
            raise ValueError(f"nproc {n} exceeds the {leased_gpus} leased GPU(s)")
        if n not in counts:
            counts.append(n)
    return counts


def resolve_backend(requested: str, leased_gpus: int) -> str:
    """``auto`` is ``nccl`` with GPUs and ``gloo`` without; ``nccl`` without a GPU is refused."""
    if requested == "auto":
        return "nccl" if leased_gpus else "gloo"
    if requested == "nccl" and not leased_gpus:
        raise ValueError("backend nccl needs GPUs, and none is leased to this run")
    return requested


def build_torchrun_argv(
    python: str,
    nproc: int,
    backend: str,
    entry: str,
    steps: int,
    out: Path,
    fault: str,
    extra: Sequence[str],
    *,
    log_dir: Path | None = None,
    pg_timeout_s: float | None = None,
    builtin_script: Path | None = None,
    local_addr: str | None = None,
) -> list[str]:
    """The launcher command line for one world size.

    ``entry`` is ``builtin``, a module (``-m pkg.mod`` or a dotted name) or a script path. The
    built-in program gets ``--steps/--out/--backend/--inject-fault`` as flags; any other entry
    gets only ``extra`` and reads the same settings from :func:`smoketest_env`'s variables.
    ``builtin_script`` runs the built-in program from that file instead of its module;
    ``local_addr`` pins the rendezvous address (a container without a network cannot resolve
    its own hostname, which ``--standalone`` uses otherwise).
    """
    argv = [
        python, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "--max-restarts=0",
        f"--monitor-interval={MONITOR_INTERVAL_S:g}",
    ]  # fmt: skip
    if local_addr is not None:
        argv.append(f"--local-addr={local_addr}")
    if log_dir is not None:
        argv += ["--log-dir", str(log_dir), "--tee", "3"]
    if entry == BUILTIN:
        program = [str(builtin_script)] if builtin_script else ["-m", BUILTIN_MODULE]
        argv += [*program, "--steps", str(steps), "--out", str(out)]
        argv += ["--backend", backend]
        if fault != "none":
            argv += ["--inject-fault", fault]
        if pg_timeout_s is not None:
            argv += ["--pg-timeout", f"{pg_timeout_s:g}"]
    elif entry.startswith("-m "):
        argv += ["-m", entry[3:].strip()]
    elif entry.endswith(".py") or "/" in entry:
        argv.append(entry)
    else:
        argv += ["-m", entry]
    return argv + list(extra)


def smoketest_env(
    base: Mapping[str, str],
    *,
    gpus: Sequence[GpuDevice],
    backend: str,
    steps: int,
    out: Path,
    fault: str,
    in_container: bool = False,
) -> dict[str, str]:
    """The launch environment: exactly the leased GPUs, unbuffered output, the settings as vars.

    In a container the engine already exposes exactly the leased GPUs, the built-in program is a
    standalone file, and the collectives talk over loopback (``setdefault``: a tier may override).
    """
    env = dict(base)
    if not gpus:
        # One thread per rank, also for N=1, so that the 1-vs-N throughput compares like with like.
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    if in_container:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.uuid for gpu in gpus)
        schedctl_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = ":".join(p for p in (schedctl_root, base.get("PYTHONPATH", "")) if p)
    env.update(
        SCHEDCTL_SMOKETEST_OUT=str(out),
        SCHEDCTL_SMOKETEST_STEPS=str(steps),
        SCHEDCTL_SMOKETEST_BACKEND=backend,
        SCHEDCTL_SMOKETEST_FAULT=fault,
    )
    return env


def run_smoketest(
    tier_cfg: TorchrunConfig,
    *,
    python: str,
    workdir: Path,
    run_dir: Path,
    timeout_s: float,
    gpus: Sequence[GpuDevice],
    cancel: threading.Event,
    env: Mapping[str, str],
    launcher: Launcher | None = None,
) -> SmoketestOutcome:
    """Launch every ``nproc`` of the tier in turn, then compare them.

    Each launch gets ``tier_cfg.run_timeout`` (default: an equal share of ``timeout_s``), never
    more than what is left of ``timeout_s``. A timeout, an OOM kill or a cancel stops the
    sequence. An injected fault goes into the multi-process launches only, so the baseline stays a
    clean reference. ``launcher`` defaults to local processes of ``python`` in ``workdir``.
    """
    launcher = launcher or local_launcher(python, workdir, run_dir, gpus=gpus)
    try:
        counts = resolve_nproc(tier_cfg.nproc, len(gpus), tier_cfg.cpu_procs)
        backend = resolve_backend(tier_cfg.backend, len(gpus))
    except ValueError as exc:
        return _finish(run_dir, SmoketestOutcome(Termination.INFRA, None, None, {}, str(exc)))
    per_run = tier_cfg.run_timeout or timeout_s / len(counts)
    deadline = time.monotonic() + timeout_s
    faulty = {n for n in counts if n > 1} or set(counts)
    runs: dict[int, TorchrunResult] = {}
    for n in counts:
        budget = min(per_run, deadline - time.monotonic())
        if budget < 1:
            break
        launch = _Launch(tier_cfg, launcher, run_dir / f"n{n}", gpus, backend, env)
        fault = tier_cfg.inject_fault if n in faulty else "none"
        try:
            runs[n] = launch.run(n, fault, budget, cancel)
        except InfraError as exc:
            return _finish(run_dir, SmoketestOutcome(Termination.INFRA, None, None, runs, str(exc)))
        if runs[n].termination in _STOPS_THE_SEQUENCE:
            break
    return _finish(run_dir, _judge(counts, runs, tier_cfg, on_gpu=bool(gpus)))


_STOPS_THE_SEQUENCE = (Termination.TIMEOUT, Termination.CANCELLED, Termination.OOM)


@dataclass(frozen=True)
class _Launch:
    cfg: TorchrunConfig
    launcher: Launcher
    out_dir: Path
    gpus: Sequence[GpuDevice]
    backend: str
    env: Mapping[str, str]

    def run(self, n: int, fault: str, timeout_s: float, cancel: threading.Event) -> TorchrunResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / METRICS_FILE
        out.unlink(missing_ok=True)
        rank_dir = self.out_dir / "ranks"
        launcher = self.launcher
        argv = build_torchrun_argv(
            launcher.python, n, self.backend, self.cfg.entry, self.cfg.steps, out, fault,
            self.cfg.args, log_dir=rank_dir,
            pg_timeout_s=min(timeout_s, self.cfg.silence_timeout) + PG_TIMEOUT_MARGIN_S,
            builtin_script=launcher.builtin_script,
            local_addr=LOOPBACK if launcher.in_container else None,
        )  # fmt: skip
        env = smoketest_env(
            self.env, gpus=self.gpus, backend=self.backend, steps=self.cfg.steps, out=out,
            fault=fault, in_container=launcher.in_container,
        )  # fmt: skip
        plan = LaunchPlan(
            n, argv, env, self.out_dir, out, rank_dir, timeout_s, self.cfg.silence_timeout
        )
        return launcher.launch(plan, cancel)


def _judge(
    counts: list[int], runs: dict[int, TorchrunResult], cfg: TorchrunConfig, on_gpu: bool
) -> SmoketestOutcome:
    summaries = {n: (runs[n].summary if n in runs else None) for n in counts}
    verdict = compare(summaries, cfg.thresholds, on_gpu)
    ended = [r.termination for r in runs.values()]
    if Termination.CANCELLED in ended:
        termination = Termination.CANCELLED
    elif Termination.OOM in ended:
        termination = Termination.OOM
    elif Termination.TIMEOUT in ended or len(runs) < len(counts):
        termination = Termination.TIMEOUT
    else:
        termination = Termination.EXITED
    exit_code = (
        0 if verdict.passed else next((r.exit_code for r in runs.values() if r.exit_code), 1)
    )
    return SmoketestOutcome(termination, exit_code, verdict, runs, _message(verdict, runs))


def _message(verdict: Verdict, runs: dict[int, TorchrunResult]) -> str:
    hung = [
        f"N={n}: {r.message}"
        for n, r in sorted(runs.items())
        if r.termination is not Termination.EXITED
    ]
    if hung:
        return "; ".join(hung)
    if not verdict.passed:
        return verdict.reasons[0] if len(verdict.reasons) == 1 else "; ".join(verdict.reasons)
    rates = ", ".join(
        f"N={row['world_size']}: {row['samples_per_s']:,.0f} samples/s"
        + (f" (efficiency {row['efficiency']:.2f})" if row["world_size"] != 1 else "")
        for row in verdict.table
        if row.get("samples_per_s") is not None and row.get("efficiency") is not None
    )
    if len(verdict.table) < 2:
        # One GPU leased (or cpu_procs 1): the checks ran, but there was no 1-vs-N comparison.
        return f"passed; {rates}; only one world size ran, so nothing was compared"
    return f"passed; {rates}"


def _finish(run_dir: Path, outcome: SmoketestOutcome) -> SmoketestOutcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    return outcome
