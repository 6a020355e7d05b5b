"""``schedctl markers audit`` as a user types it, timed as whole processes.

Two projects: examples/suite (target < 10 s) and a generated project shaped like the reference
analysis (643 tests, 29 marked, 30 recorded runs of history; target < 30 s). Each audit collects
for real (local runner, collect-only through the results plugin) and reads the history. The
baseline beside each figure is a plain ``python -m pytest --collect-only -q`` of the same project:
what collecting alone costs.

    python bench/bench_markers.py [--runs 30] [--strict]

One line per figure: figure, measured, baseline, target, OK/MISSED (``--strict`` exits 1 when a
target is missed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.store import Store  # noqa: E402
from tests.scheduler.markers import reference  # noqa: E402

TARGETS_S = {"examples/suite": 10.0, "reference (643 tests)": 30.0}


def write_config(tmp: Path, name: str, project: Path) -> Path:
    data = {
        "state_dir": str(tmp / f"state-{name}"),
        "runner": "local",
        "local": {"allow_root": True},
        "project": {"path": str(project)},
        "tiers": {
            "hourly": {"schedule": "15 * * * *", "timeout": "30m", "markers": "hourly"},
            "daily": {"schedule": "30 2 * * *", "timeout": "90m", "markers": "daily"},
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def timed(argv: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="history runs of the 643 tests")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    missed = False
    with tempfile.TemporaryDirectory(prefix="bench-markers-") as name:
        tmp = Path(name)
        generated = reference.write_project(tmp / "reference")
        projects = {
            "examples/suite": (ROOT / "examples" / "suite", 0),
            "reference (643 tests)": (generated, args.runs),
        }
        print(f"{'figure':<44} {'measured':>9} {'baseline':>9} {'target':>8}  verdict")
        for label, (project, runs) in projects.items():
            config = write_config(tmp, label.split()[0].replace("/", "-"), project)
            if runs:
                state = tmp / f"state-{label.split()[0]}"
                reference.record_history(Store(state / "schedctl.db"), runs=runs)
            baseline = timed(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                project,
            )
            audit = [sys.executable, "-m", "scheduler", "--config", str(config), "markers"]
            measured = timed([*audit, "audit", "--json"], tmp)
            target = TARGETS_S[label]
            ok = measured < target
            missed = missed or not ok
            figure = f"markers audit --json on {label}"
            print(f"{figure:<44} {measured:>8.2f}s {baseline:>8.2f}s {target:>7.0f}s  "
                  f"{'OK' if ok else 'MISSED'}")  # fmt: skip
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
