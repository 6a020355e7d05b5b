"""Run the torchrun smoketest tier as the scheduler would, and print the 1-vs-N table.

    python bench/bench_smoketest.py                       # CPU, gloo, 1 and 2 processes
    python bench/bench_smoketest.py --gpus all            # every GPU nvidia-smi lists, nccl
    python bench/bench_smoketest.py --nproc 1,2,4 --fault hang --run-timeout 30

Prints each launch's wall time and the verdict table; ``--json PATH`` keeps the whole outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runners.base import GpuDevice  # noqa: E402
from scheduler.config import Thresholds, TorchrunConfig  # noqa: E402
from scheduler.smoketest import format_table, run_smoketest  # noqa: E402


def leased_gpus(spec: str) -> list[GpuDevice]:
    if spec == "none":
        return []
    listing = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    gpus = [
        GpuDevice(int(i), u.strip())
        for i, u in (line.split(",") for line in listing.split("\n") if line)
    ]
    return gpus if spec == "all" else gpus[: int(spec)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nproc", default="1,all")
    parser.add_argument("--gpus", default="none", help="none, all or a count")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fault", default="none", choices=("none", "desync", "hang"))
    parser.add_argument("--run-timeout", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/schedctl-smoketest"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("args", nargs="*", help="extra args for the program (after --)")
    opts = parser.parse_args()
    nproc: list[int | str] = [n if n == "all" else int(n) for n in opts.nproc.split(",")]
    cfg = TorchrunConfig(
        nproc=nproc, steps=opts.steps, inject_fault=opts.fault, run_timeout=opts.run_timeout,
        args=opts.args, thresholds=Thresholds(),
    )  # fmt: skip
    gpus = leased_gpus(opts.gpus)
    started = time.monotonic()
    outcome = run_smoketest(
        cfg, python=sys.executable, workdir=ROOT, run_dir=opts.run_dir, timeout_s=opts.timeout,
        gpus=gpus, cancel=threading.Event(), env=dict(os.environ),
    )  # fmt: skip
    print(f"gpus: {[g.uuid for g in gpus] or 'none'}; total {time.monotonic() - started:.1f} s")
    for n, run in sorted(outcome.runs.items()):
        step = run.summary.get("median_step_time_s") if run.summary else None
        ended = f"{run.termination.value}, exit {run.exit_code}, {run.duration_s:.1f} s wall"
        print(f"  N={n}: {ended}, median step {step} s — {run.message}")
        if run.stacks:
            print(run.stacks[:3000])
    print(f"termination: {outcome.termination.value}; {outcome.message}")
    if outcome.verdict:
        print(format_table(outcome.verdict))
    if opts.json:
        opts.json.write_text(json.dumps(outcome.to_json(), indent=2))
    return 0 if outcome.verdict and outcome.verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
