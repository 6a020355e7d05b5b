"""Local runner overhead: schedctl's run path vs bare ``pytest -m hourly`` on examples/suite.

Both are measured side by side in one process, interleaved, so machine noise hits both alike.
Target: schedctl adds <= 0.3 s per run (dispatcher + store + results plugin + parsing).

    python bench/bench_local.py [-n 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.registry import RunnerFactory  # noqa: E402
from scheduler.config import config_from_mapping  # noqa: E402
from scheduler.daemon.assembly import build_dispatcher  # noqa: E402
from scheduler.kernel.outcome import Outcome  # noqa: E402
from scheduler.run.dispatch import RunRequest  # noqa: E402
from scheduler.store.engine import Store  # noqa: E402

SUITE = ROOT / "examples" / "suite"
TARGET_S = 0.3


def bare() -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hourly"],
        cwd=SUITE,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping(
            {
                "state_dir": tmp,
                "runner": "local",
                "project": {"path": str(SUITE)},
                "tiers": {"hourly": {"markers": "hourly", "timeout": 600}},
            },
        )
        store = Store(config.db_path)
        dispatcher = build_dispatcher(config, store, runners=RunnerFactory())

        def schedctl() -> float:
            t0 = time.perf_counter()
            record = dispatcher.run(RunRequest("hourly"))
            elapsed = time.perf_counter() - t0
            assert record.outcome is Outcome.PASSED, record.reason
            return elapsed

        bare(), schedctl()  # warm caches
        bare_s, ours_s = [], []
        for _ in range(args.n):
            bare_s.append(bare())
            ours_s.append(schedctl())
    b, o = statistics.median(bare_s), statistics.median(ours_s)
    added = o - b
    print(f"bare pytest -m hourly   median {b:.3f}s  (n={args.n})")
    print(f"schedctl local run      median {o:.3f}s  ratio {o / b:.2f}x")
    print(
        f"added per run           {added:+.3f}s  target <= {TARGET_S}s  "
        f"({'OK' if added <= TARGET_S else 'MISSED'}; {added / TARGET_S:.2f} of target)"
    )


if __name__ == "__main__":
    main()
