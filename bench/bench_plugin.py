"""The results plugin's cost on a suite of 1,000 trivial tests: bare pytest vs pytest with the
plugin writing its JSON lines and measuring each test's peak memory.

Both are run as fresh pytest processes, interleaved, and the medians of their CPU time (user +
system, from ``getrusage(RUSAGE_CHILDREN)``) compared: on a loaded shared machine wall time
measures the neighbours, CPU time measures the plugin. Targets (issue 22): <= 0.2 ms added per
test and <= 3 % of the suite's time.

    python bench/bench_plugin.py [-n 7] [--tests 1000] [--strict]
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
    if plugin:
        results = directory / "results.jsonl"
        results.unlink(missing_ok=True)
        env["SCHEDCTL_RESULTS"] = str(results)
        argv[3:3] = ["-p", "schedctl_results"]
    else:
        env.pop("SCHEDCTL_RESULTS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=directory, env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7, help="pairs of runs")
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        suite(directory, args.tests)
        timed(directory, True)  # warm the page cache and the .pyc of pytest itself
        bare, with_plugin = [], []
        for _ in range(args.n):
            bare.append(timed(directory, False))
            with_plugin.append(timed(directory, True))
    base, plug = statistics.median(bare), statistics.median(with_plugin)
    added = plug - base
    per_test_ms = added / args.tests * 1000
    share = added / base
    ok_per_test = per_test_ms <= TARGET_PER_TEST_MS
    ok_share = share <= TARGET_SHARE
    print(f"suite: {args.tests} trivial tests, {args.n} interleaved pairs, median CPU time")
    print(f"  bare pytest          {base * 1000:8.1f} ms   (baseline)")
    print(f"  with results plugin  {plug * 1000:8.1f} ms")
    print(f"  added per test       {per_test_ms:8.3f} ms   target <= {TARGET_PER_TEST_MS} ms: "
          f"{'OK' if ok_per_test else 'MISSED'}")  # fmt: skip
    print(f"  added share          {share * 100:8.2f} %    target <= {TARGET_SHARE * 100:.0f} %: "
          f"{'OK' if ok_share else 'MISSED'}")  # fmt: skip
    return 1 if args.strict and not (ok_per_test and ok_share) else 0


if __name__ == "__main__":
    sys.exit(main())
