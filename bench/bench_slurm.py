"""Slurm runner overhead: a schedctl run on Slurm vs a bare ``sbatch --wait`` of the same pytest
command on examples/suite (``-m hourly``), interleaved so machine noise hits both alike.

The figure is schedctl's wall time minus the bare job's: submission, the wait for the start,
output copy, results parsing and the store. ``sbatch --wait`` itself polls the controller with a
growing interval (a job a little over 2 s returns after ~10 s), so the baseline is bimodal:
medians and minimums of both are printed; the target is that schedctl adds <= 1 s to it.
Needs the cluster of scripts/ensure-slurm.sh.

    python bench/bench_slurm.py [-n 5]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.registry import RunnerFactory, instance_of  # noqa: E402
from runners.slurm_support import slurm_available  # noqa: E402
from scheduler.config import config_from_mapping  # noqa: E402
from scheduler.daemon.assembly import build_dispatcher  # noqa: E402
from scheduler.kernel.outcome import Outcome  # noqa: E402
from scheduler.run.dispatch import RunRequest  # noqa: E402
from scheduler.store.engine import Store  # noqa: E402

SUITE = ROOT / "examples" / "suite"
TARGET_S = 1.0


def bare(tmp: Path) -> float:
    script = tmp / "bare.sh"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hourly"]
    script.write_text(f"#!/bin/bash\ncd {shlex.quote(str(SUITE))}\nexec {shlex.join(command)}\n")
    t0 = time.perf_counter()
    subprocess.run(
        ["sbatch", "--wait", "--quiet", "--mem=1g", f"--output={tmp / 'bare.out'}", str(script)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    ok, reason = slurm_available()
    if not ok:
        sys.exit(f"no Slurm cluster: {reason} (run scripts/ensure-slurm.sh)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = config_from_mapping(
            {
                "state_dir": tmp_name,
                "runner": "slurm",
                "project": {"path": str(SUITE)},
                "tiers": {"hourly": {"markers": "hourly", "timeout": 600, "memory": "1g"}},
            },
        )
        store = Store(config.db_path)
        runners = RunnerFactory(instance=instance_of(config.state_dir))
        dispatcher = build_dispatcher(config, store, runners=runners)

        def schedctl() -> float:
            t0 = time.perf_counter()
            record = dispatcher.run(RunRequest("hourly"))
            elapsed = time.perf_counter() - t0
            assert record.outcome is Outcome.PASSED, record.reason
            return elapsed

        bare(tmp), schedctl()  # warm caches
        bare_s, ours_s = [], []
        for _ in range(args.n):
            bare_s.append(bare(tmp))
            ours_s.append(schedctl())
    b, o = statistics.median(bare_s), statistics.median(ours_s)
    added = o - b
    print(
        f"bare sbatch --wait (pytest -m hourly)  median {b:.3f}s  min {min(bare_s):.3f}s"
        f"  (n={args.n})"
    )
    print(f"schedctl run on slurm                  median {o:.3f}s  min {min(ours_s):.3f}s")
    print(f"added, best case against best case     {min(ours_s) - min(bare_s):+.3f}s")
    print(
        f"added per run                          {added:+.3f}s  target <= {TARGET_S}s  "
        f"({'OK' if added <= TARGET_S else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
