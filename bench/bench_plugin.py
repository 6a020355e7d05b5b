"""The results plugin's cost on a suite of 1,000 trivial tests: bare pytest vs pytest with the
plugin writing its JSON lines (with a nonce, as runs do) and measuring each test's peak memory.

Both are run as whole pytest processes, as a user types them, interleaved in pairs; the figure is
the median over pairs of the added CPU time (user + system of the whole process, all threads,
from ``getrusage(RUSAGE_CHILDREN)``) -- on a loaded shared machine wall time measures the
neighbours, CPU time measures the plugin, and pairing cancels the load's drift. Targets (issue
22): <= 0.2 ms added per test and <= 3 % of the suite's time. Since the plugin buffers its lines
(a flusher thread writes them every 0.25 s) it no longer pays two write(2) per test.

    python bench/bench_plugin.py [-n 11] [--tests 1000] [--strict]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_PER_TEST_MS = 0.2
TARGET_SHARE = 0.03


def suite(directory: Path, tests: int) -> None:
    body = "".join(f"def test_{i}():\n    pass\n\n" for i in range(tests))
    (directory / "test_trivial.py").write_text(body)
    shutil.copyfile(ROOT / "runners" / "pytest_plugin.py", directory / "schedctl_results.py")


def timed(directory: Path, plugin: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(directory), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
    for name in ("SCHEDCTL_RESULTS", "SCHEDCTL_NONCE", "SCHEDCTL_STACKS_DIR", "SCHEDCTL_JUNIT"):
        env.pop(name, None)
    if plugin:
        results = directory / "results.jsonl"
        results.unlink(missing_ok=True)
        env["SCHEDCTL_RESULTS"] = str(results)
        env["SCHEDCTL_NONCE"] = "0123456789abcdef0123456789abcdef"
        argv[3:3] = ["-p", "schedctl_results"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=directory, env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if plugin and sum(1 for _ in (directory / "results.jsonl").open()) < 2:
        raise SystemExit("the plugin wrote no results: the figure would measure nothing")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=11, help="pairs of runs")
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        suite(directory, args.tests)
        timed(directory, True)  # warm the page cache and the .pyc of pytest itself
        bare, added = [], []
        for i in range(args.n):
            pair = (False, True) if i % 2 == 0 else (True, False)  # alternate the order
            times = {plugin: timed(directory, plugin) for plugin in pair}
            bare.append(times[False])
            added.append(times[True] - times[False])
    base = statistics.median(bare)
    extra = statistics.median(added)
    per_test_ms = extra / args.tests * 1000
    share = extra / base
    ok_per_test = per_test_ms <= TARGET_PER_TEST_MS
    ok_share = share <= TARGET_SHARE
    print(f"suite: {args.tests} trivial tests, {args.n} interleaved pairs of whole pytest "
          "processes, CPU time (median; added = median of the pairs' differences)")  # fmt: skip
    print(f"  bare pytest (baseline)  {base * 1000:8.1f} ms   "
          f"with results plugin {(base + extra) * 1000:8.1f} ms")  # fmt: skip
    print(f"added per test  {per_test_ms:7.3f} ms  baseline 0 (bare pytest)  "
          f"target <= {TARGET_PER_TEST_MS} ms: {'OK' if ok_per_test else 'MISSED'}")  # fmt: skip
    print(f"added share     {share * 100:7.2f} %   of bare {base * 1000:.0f} ms  "
          f"target <= {TARGET_SHARE * 100:.0f} %: {'OK' if ok_share else 'MISSED'}")  # fmt: skip
    return 1 if args.strict and not (ok_per_test and ok_share) else 0


if __name__ == "__main__":
    sys.exit(main())
