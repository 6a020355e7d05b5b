"""The built-in DDP smoketest program, run on every rank under ``torchrun``.

A small MLP learns a fixed random teacher on synthetic data. The *global* batch is the same for
every world size and each rank trains on its shard of it, so with DDP's gradient averaging the
runs at N=1 and N>1 follow the same trajectory up to float rounding and their final losses are
comparable. Every rank checks, and rank 0 reports as JSON lines (``--out`` and stdout):

* ``allreduce_ok``: an all-reduce of ``rank + 1`` gives exactly ``W (W + 1) / 2``;
* ``params_in_sync``: after every step, a fingerprint of the flattened parameters is all-gathered
  and must match rank 0's on every rank;
* ``loss_decreased``: the final global loss is below the first one.

Faults for the tier's self-test: ``desync`` perturbs rank R's parameters after the optimizer step,
outside DDP's all-reduce; ``hang`` makes rank R sleep forever at step 2. ``SIGUSR1`` dumps every
thread's Python stack to stderr (faulthandler) so a supervisor can capture it before killing.

Only this module imports torch; it is loaded by ``python -m scheduler.smoketest``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

SYNC_RTOL = 1e-6
DESYNC_NOISE = 1e-2
EXIT_CHECK_FAILED = 1

# Defaults sized so that a CPU run of 20 steps takes a few seconds, and a GPU step does enough
# work for the 1-vs-N throughput comparison to measure scaling rather than launch latency.
_CPU_SIZES = {"batch": 960, "hidden": 256, "features": 32}
_GPU_SIZES = {"batch": 16800, "hidden": 2048, "features": 512}


@dataclass(frozen=True)
class Options:
    steps: int
    batch: int | None
    hidden: int | None
    seed: int
    lr: float
    backend: str
    out: Path | None
    inject_fault: str
    fault_rank: int | None
    pg_timeout_s: float


@dataclass
class Report:
    """What rank 0 writes as the summary line."""

    batch: int = 0
    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    checks_failed: list[str] = field(default_factory=list)
    allreduce_ok: bool = True
    params_in_sync: bool = True


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m scheduler.smoketest", description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None, help="global batch (all ranks)")
    parser.add_argument("--hidden", type=int, default=None, help="MLP width")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file (rank 0)")
    parser.add_argument("--inject-fault", choices=("none", "desync", "hang"), default="none")
    parser.add_argument("--fault-rank", type=int, default=None, help="default: the last rank")
    parser.add_argument("--pg-timeout", type=float, default=300.0, dest="pg_timeout_s")
    ns = parser.parse_args(argv)
    if ns.steps < 2:
        parser.error("--steps must be at least 2")
    return Options(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if "MASTER_ADDR" not in os.environ:  # run by hand, without torchrun: a world of one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1")
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend, device = _pick_backend(opts.backend, local_rank)
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=timedelta(seconds=opts.pg_timeout_s)
    )
    try:
        report = _train(opts, rank, world, device)
        peak_mb = _peak_memory_mb(device)  # a collective: every rank must take part
        if rank == 0:
            _emit(opts.out, _summary(report, world, backend, device, peak_mb))
    finally:
        dist.destroy_process_group()
    if report.checks_failed:
        print(
            f"smoketest: rank {rank}: checks failed: {', '.join(report.checks_failed)}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CHECK_FAILED
    return 0


def _pick_backend(requested: str, local_rank: int) -> tuple[str, torch.device]:
    cuda = torch.cuda.is_available()
    backend = requested if requested != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl":
        if not cuda:
            raise SystemExit("smoketest: backend nccl needs CUDA, and no GPU is visible")
        torch.cuda.set_device(local_rank)
        return backend, torch.device("cuda", local_rank)
    return backend, torch.device("cpu")


def _train(opts: Options, rank: int, world: int, device: torch.device) -> Report:
    sizes = _GPU_SIZES if device.type == "cuda" else _CPU_SIZES
    batch = opts.batch or sizes["batch"]
    if batch % world:
        raise SystemExit(f"smoketest: global batch {batch} is not divisible by world size {world}")
    torch.manual_seed(opts.seed)
    model = _mlp(sizes["features"], opts.hidden or sizes["hidden"]).to(device)
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = torch.optim.SGD(ddp.parameters(), lr=opts.lr, momentum=0.9)
    data = _shards(opts.seed, sizes["features"], batch, rank, world, device, n=min(opts.steps, 8))
    fault_rank = world - 1 if opts.fault_rank is None else opts.fault_rank
    report = Report(batch=batch)
    report.allreduce_ok = _check_allreduce(rank, world, device)
    for step in range(opts.steps):
        if opts.inject_fault == "hang" and step == 2 and rank == fault_rank:
            _hang(rank, step)
        inputs, targets = data[step % len(data)]
        loss, seconds = _step(ddp, optimizer, inputs, targets, device)
        if opts.inject_fault == "desync" and rank == fault_rank and world > 1:
            _perturb(model)
        global_loss = _global_mean(loss, world)
        report.losses.append(global_loss)
        report.step_times.append(seconds)
        if rank == 0:
            _emit(opts.out, _step_line(step, global_loss, seconds, batch))
        if not _params_in_sync(model, world, rank, step):
            report.params_in_sync = False
            break  # every rank saw the same all-gathered fingerprints, so all stop here together
    report.allreduce_ok = report.allreduce_ok and _check_allreduce(rank, world, device)
    report.checks_failed = _failed_checks(report)
    return report


def _hang(rank: int, step: int) -> NoReturn:
    print(f"smoketest: rank {rank}: injected hang at step {step}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


def _mlp(features: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )


def _shards(
    seed: int, features: int, batch: int, rank: int, world: int, device: torch.device, n: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed global batches (identical on every rank), reduced to this rank's rows."""
    gen = torch.Generator().manual_seed(seed + 1)
    teacher = torch.randn(features, 1, generator=gen) / features**0.5
    per_rank = batch // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    shards = []
    for _ in range(n):
        inputs = torch.randn(batch, features, generator=gen)
        targets = torch.tanh(inputs @ teacher) + 0.1 * torch.sin(3 * inputs[:, :1])
        shards.append((inputs[rows].to(device), targets[rows].to(device)))
    return shards


def _step(
    ddp: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(ddp(inputs), targets)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss.detach(), time.perf_counter() - started


@torch.no_grad()
def _perturb(model: nn.Module) -> None:
    for param in model.parameters():
        param.add_(torch.randn_like(param) * DESYNC_NOISE)


def _global_mean(loss: torch.Tensor, world: int) -> float:
    total = loss.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total.item()) / world


def _check_allreduce(rank: int, world: int, device: torch.device) -> bool:
    values = torch.full((8,), float(rank + 1), dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    expected = world * (world + 1) / 2
    ok = bool(torch.all(values == expected).item())
    if not ok:
        print(
            f"smoketest: rank {rank}: all-reduce gave {values.tolist()}, expected {expected}",
            file=sys.stderr,
            flush=True,
        )
    return _all_agree(ok, device)


def _all_agree(ok: bool, device: torch.device) -> bool:
    """True only if every rank's ``ok`` is true, so that all ranks take the same branch."""
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) == 0


@torch.no_grad()
def _params_in_sync(model: nn.Module, world: int, rank: int, step: int) -> bool:
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    fingerprint = torch.stack([flat.sum(), flat.abs().sum(), (flat * flat).sum()])
    gathered = [torch.empty_like(fingerprint) for _ in range(world)]
    dist.all_gather(gathered, fingerprint)
    reference = gathered[0]
    tolerance = SYNC_RTOL * torch.clamp(reference.abs(), min=1.0)
    for other, theirs in enumerate(gathered[1:], start=1):
        if bool(torch.any((theirs - reference).abs() > tolerance).item()):
            print(
                f"smoketest: rank {rank}: parameters of rank {other} differ from rank 0 after "
                f"step {step}: {theirs.tolist()} != {reference.tolist()}",
                file=sys.stderr,
                flush=True,
            )
            return False
    return True


def _failed_checks(report: Report) -> list[str]:
    failed = []
    if not report.allreduce_ok:
        failed.append("allreduce_ok")
    if not report.params_in_sync:
        failed.append("params_in_sync")
    if _loss_decreased(report) is False:
        failed.append("loss_decreased")
    return failed


def _loss_decreased(report: Report) -> bool | None:
    """``None`` when training stopped at a desync: the loss then says nothing of its own."""
    if not report.params_in_sync:
        return None
    return len(report.losses) >= 2 and report.losses[-1] < report.losses[0]


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        peak = float(torch.cuda.max_memory_allocated(device)) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    value = torch.tensor([peak], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return round(float(value.item()), 1)


def _step_line(step: int, loss: float, seconds: float, batch: int) -> dict[str, Any]:
    return {
        "type": "step",
        "step": step,
        "loss": loss,
        "step_time_s": round(seconds, 6),
        "samples_per_s": round(batch / seconds, 1) if seconds > 0 else None,
        "batch": batch,
    }


def _summary(
    report: Report, world: int, backend: str, device: torch.device, peak_mb: float
) -> dict[str, Any]:
    batch_rates = [1.0 / t for t in _after_warmup(report.step_times) if t > 0]
    batch = report.batch
    return {
        "type": "summary",
        "world_size": world,
        "backend": backend,
        "device": device.type,
        "steps": len(report.losses),
        "initial_loss": report.losses[0] if report.losses else None,
        "final_loss": report.losses[-1] if report.losses else None,
        "samples_per_s": round(batch * statistics.median(batch_rates), 1) if batch_rates else None,
        "median_step_time_s": (
            round(statistics.median(_after_warmup(report.step_times)), 6) if batch_rates else None
        ),
        "peak_memory_mb": peak_mb,
        "params_in_sync": report.params_in_sync,
        "allreduce_ok": report.allreduce_ok,
        "loss_decreased": _loss_decreased(report),
        "checks_failed": report.checks_failed,
    }


def _after_warmup(times: list[float]) -> list[float]:
    """Step times without the first steps (allocator and communicator warm-up)."""
    skip = min(max(1, len(times) // 5), len(times) - 1) if len(times) > 1 else 0
    return times[skip:]


def _emit(out: Path | None, record: dict[str, Any], stream: TextIO | None = None) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, file=stream or sys.stdout, flush=True)
    if out is not None:
        with out.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":  # run as a standalone script (copied into a container's plugin dir)
    sys.exit(main())
