"""What every bench prints: one line per figure -- figure, baseline, target, OK/MISSED."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "examples" / "suite"
SCHEDCTL = (sys.executable, "-c", "from scheduler.cli import main; main()")
"""``schedctl`` as its console script starts it; with :func:`tree_env`, this tree's code."""

LOCAL_CONFIG = """\
state_dir: {state}
timezone: UTC
runner: local
local:
  allow_root: true
project:
  path: {suite}
tiers:
  hourly:
    schedule: "15 * * * *"
    timeout: 30m
    markers: hourly
  daily:
    schedule: "30 2 * * *"
    timeout: 90m
    markers: daily or not hourly
"""


def local_config(state: Path, extra: str = "") -> str:
    """A two-tier local-runner config on the example suite, as a user writes one; ``extra`` is
    more top-level YAML."""
    return LOCAL_CONFIG.format(state=state, suite=SUITE) + extra


def tree_env(**extra: str) -> dict[str, str]:
    """This environment with this tree's code first on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def figure(name: str, value: str, baseline: str, target: str, ok: bool) -> str:
    """One result line; ``make bench`` greps these."""
    line = f"{name:<44} {value:>12}  baseline {baseline:>12}  target {target:<18} "
    line += "OK" if ok else "MISSED"
    print(line, flush=True)
    return line


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(argv: Sequence[str], **kwargs: object) -> float:
    """Wall seconds of one whole process, as a user would start it."""
    t0 = time.perf_counter()
    subprocess.run(list(argv), check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def interleaved(runs: dict[str, Callable[[], float]], n: int, warm: int = 1) -> dict[str, float]:
    """Median seconds of each callable, run in interleaved rounds (noise hits all alike)."""
    for _ in range(warm):
        for run in runs.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(n):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}
