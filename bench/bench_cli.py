"""Whole-process CLI start-up: ``schedctl`` commands as a user types them vs bare Python.

Each command is a fresh process of the console script's code (``from scheduler.cli import
main; main()``) with this tree's code first on the path, interleaved with the baseline
``python -c pass`` so machine noise hits both alike; medians. ``runs``, ``show`` and ``status``
read a store that one local ``schedctl run`` wrote. Targets: ``--version``/``--help`` <= 0.15 s
over the baseline; ``schedule``, ``runs``, ``show``, ``status`` <= 0.3 s over it.

Those four take the config from a snapshot of an earlier full validation of the same file
(``scheduler.config_cache``; the warm-up round writes it, as a user's first command does). The
first command after each config change has no snapshot: ``runs (config just changed)``
measures that, each time with an empty snapshot directory. Such a command reads the view straight
from the YAML and leaves the full validation and the snapshot to a background process
(``scheduler.config_cache.load_view``): the figure is the command's own wall time, as the user
waits for it; the bench then waits for the snapshot (outside the figure, so that the background
work does not load the next measurement) and prints, as a note, the median time until the
snapshot was written -- what the figure measured before (the command validated and wrote it
itself).

    python bench/bench_cli.py [-n 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import SCHEDCTL, figure, interleaved, local_config, timed, tree_env  # noqa: E402

TARGETS_S = {
    "--version": 0.15,
    "--help": 0.15,
    "schedule": 0.3,
    "runs": 0.3,
    "show 1": 0.3,
    "status": 0.3,
}


COLD = "runs (config just changed)"


def cold(argv: list[str], env: dict[str, str], tmp: str, settled: list[float]) -> float:
    """One command with no config snapshot to read (a fresh, empty snapshot directory): its
    wall seconds; appends to ``settled`` the seconds until its snapshot existed."""
    where = Path(tempfile.mkdtemp(dir=tmp))
    t0 = time.perf_counter()
    took = timed(argv, env={**env, "SCHEDCTL_CACHE_DIR": str(where)}, cwd=tmp)
    deadline = t0 + 60
    while not any(where.glob("config-*.pickle")) and time.perf_counter() < deadline:
        time.sleep(0.005)
    settled.append(time.perf_counter() - t0)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=7)
    args = parser.parse_args()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set: every process compiles this tree's modules")
    with tempfile.TemporaryDirectory() as tmp:
        env = tree_env(SCHEDCTL_CACHE_DIR=f"{tmp}/cache")
        config = Path(tmp) / "config.yaml"
        config.write_text(local_config(Path(tmp) / "state"))
        base = [*SCHEDCTL, "--config", str(config)]
        subprocess.run(
            [*base, "run", "hourly", "--json"], check=True, capture_output=True, env=env, cwd=tmp
        )
        runs = {"baseline": partial(timed, [sys.executable, "-c", "pass"], env=env, cwd=tmp)}
        for command in TARGETS_S:
            runs[command] = partial(timed, [*base, *command.split()], env=env, cwd=tmp)
        settled: list[float] = []
        runs[COLD] = partial(cold, [*base, "runs"], env, tmp, settled)
        medians = interleaved(runs, args.n)
    baseline = medians["baseline"]
    for command, target in {**TARGETS_S, COLD: TARGETS_S["runs"]}.items():
        added = medians[command] - baseline
        figure(
            f"schedctl {command} (median of {args.n})",
            f"{medians[command]:.3f} s",
            f"{baseline:.3f} s",
            f"+{target:.2f} s (+{added:.3f})",
            added <= target,
        )
    print(f"note: after `runs (config just changed)` its snapshot existed "
          f"{statistics.median(settled):.3f} s after the start (median of {len(settled)}; the "
          "command validated and wrote it itself before, this was the figure)")  # fmt: skip


if __name__ == "__main__":
    main()
