"""Page-render times of ``schedctl web`` on a store holding 1,000,000 test results.

The store comes from bench/bench_history.py's generator (1,000 tests x 1,000 hourly runs, flaky
tests, regressions), filled through ``Store.finish_run``; ``--db`` keeps it for the next run
(filling takes minutes). The pages are served as a user starts them, ``schedctl web --db PATH``
in its own process, and each page is fetched ``--reps`` times over HTTP after one warm-up.
Baseline: the same server's ``/healthz`` (HTTP and process overhead, no store, no template).

Target (issue 15): every page <= 300 ms at p95 (``--strict`` exits 1 when one is missed).

    python bench/bench_web.py [--db /tmp/web-bench-1m.db] [--reps 40] [--strict]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_history import START, cached_store, fill  # noqa: E402

from scheduler.history.stats import History  # noqa: E402
from scheduler.store import RunFilter, Store  # noqa: E402

TARGET_P95_MS = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int, path: str) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    elapsed = (time.perf_counter() - t0) * 1000
    if response.status != 200:
        raise SystemExit(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
    return elapsed


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--db", type=Path, help="keep the store here; reuse it when it exists")
    parser.add_argument(
        "--cache", type=Path, help="keep the store in this directory (bench_history)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.cache and not args.db:
            path, built = cached_store(args.cache, args.tests, args.runs, args.seed)
            reuse, fill_s = built is None, built or 0.0
            store = Store(path)
        else:
            path = args.db or Path(tmp) / "schedctl.db"
            reuse = path.exists()
            store = Store(path)
            fill_s = 0.0 if reuse else fill(store, args.tests, args.runs, args.seed)
        end = START + timedelta(hours=args.runs)
        history = History(store)
        flaky = history.tests(end, since_s=30 * 86400.0, sort="flaky", limit=1)[0].nodeid
        last = store.max_run_id()
        failed = store.filter_runs(store_filter("failed"), limit=1)
        red = failed[0].id if failed else last
        results = sum(1 for _ in store.test_results_for(last))
        store.engine.dispose()
        pages = {
            "overview /": "/",
            "runs /runs": "/runs",
            "runs, filtered + page 2": f"/runs?tier=hourly&outcome=failed&before={red}",
            f"run ({results} tests)": f"/runs/{last}",
            "run, failed, by memory": f"/runs/{red}?sort=memory",
            "run log": f"/runs/{last}/log",
            "test (flaky, 60 runs)": f"/test?id={quote(flaky)}",
            "flaky & quarantine": "/flaky",
            "markers": "/markers",
        }
        port = free_port()
        as_of = (end - timedelta(days=1)).date().isoformat()
        argv = [sys.executable, "-m", "scheduler", "web", "--db", str(path),
                "--address", f"127.0.0.1:{port}", "--as-of", as_of]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=ROOT, text=True)  # fmt: skip
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            if "serving" not in banner:
                err = proc.stderr.read() if proc.stderr else ""
                raise SystemExit(f"schedctl web did not start: {banner}{err}")
            base = [fetch(port, "/healthz") for _ in range(args.reps)]
            timings: dict[str, list[float]] = {}
            for name, target in pages.items():
                fetch(port, target)  # warm-up: page cache, compiled templates
                timings[name] = [fetch(port, target) for _ in range(args.reps)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        size_mb = path.stat().st_size / 2**20
    shape = f"{args.tests} tests x {args.runs} runs"
    kept = " (reused)" if reuse else ""
    print(f"store: {args.tests * args.runs:,} test results ({shape}), "
          f"filled in {fill_s:.0f} s, {size_mb:.0f} MiB{kept}")  # fmt: skip
    print(f"server: schedctl web --db {path.name} --as-of {as_of} in its own process; "
          f"{args.reps} fetches per page after one warm-up")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'page':28}{'p50 ms':>9}{'p95 ms':>9}{'baseline p95':>14}{'target':>9}")
    ok = True
    base95 = p95(base)
    for name, values in timings.items():
        met = p95(values) <= TARGET_P95_MS
        ok = ok and met
        values.sort()
        print(f"{name:28}{values[len(values) // 2]:>9.1f}{p95(values):>9.1f}{base95:>14.1f}"
              f"{'<= ' + str(int(TARGET_P95_MS)):>9}  {'OK' if met else 'MISSED'}")  # fmt: skip
    print("baseline: /healthz of the same server (HTTP + process, no store, no template)")
    return 1 if args.strict and not ok else 0


def store_filter(outcome: str) -> RunFilter:
    return RunFilter(tier="hourly", outcome=outcome)


if __name__ == "__main__":
    sys.exit(main())
