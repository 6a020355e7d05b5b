"""Time and memory to refuse each malformed config of the fuzz corpus, side by side with targets.

The corpus is tests/scheduler/test_config_fuzz.py's (200+ configs: alias bomb, 5,000-deep
nesting, duplicate keys, NaN timeouts, ...). Before the bounded loader the alias bomb alone took
78 s and 1.2 GB. Targets: every case refused in < 1 s and < 100 MB (peak traced allocation).

Usage: .venv/bin/python bench/bench_config_fuzz.py [--check]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.config import load_config  # noqa: E402
from scheduler.kernel.errors import ConfigError  # noqa: E402
from tests.scheduler.test_config_fuzz import MAPPING_CASES, RAW_CASES  # noqa: E402

TIME_TARGET_S = 1.0
MEMORY_TARGET_B = 100 * 1024 * 1024
BASELINE = "alias bomb before the bounded loader: 78 s, 1.2 GB"


def refuse(path: Path) -> None:
    try:
        load_config(path, env={})
    except ConfigError:
        return
    raise SystemExit(f"{path.name}: was accepted")


def measure(path: Path) -> tuple[float, int]:
    """Wall time (untraced: tracemalloc slows Python several-fold), then peak memory (traced)."""
    started = time.perf_counter()
    refuse(path)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    refuse(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    texts = [(n, yaml.safe_dump(d)) for n, d, _ in MAPPING_CASES]
    texts += [(n, t) for n, t, _ in RAW_CASES]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in texts:
            path = Path(tmp) / "config.yaml"
            path.write_text(text)
            results.append((name, *measure(path)))
    worst_time = max(results, key=lambda r: r[1])
    worst_mem = max(results, key=lambda r: r[2])
    ok_time = worst_time[1] < TIME_TARGET_S
    ok_mem = worst_mem[2] < MEMORY_TARGET_B
    print(f"cases: {len(results)}   baseline: {BASELINE}")
    print(
        f"slowest: {worst_time[1]:.3f} s ({worst_time[0]})   target < {TIME_TARGET_S} s   "
        f"{'OK' if ok_time else 'MISSED'}"
    )
    print(
        f"largest: {worst_mem[2] / 1e6:.1f} MB ({worst_mem[0]})   target < "
        f"{MEMORY_TARGET_B / 1e6:.0f} MB   {'OK' if ok_mem else 'MISSED'}"
    )
    if args.check and not (ok_time and ok_mem):
        sys.exit(1)


if __name__ == "__main__":
    main()
