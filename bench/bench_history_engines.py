"""The history queries at 1,000,000 test results on both engines, side by side.

Fills a SQLite file and a PostgreSQL database with the same history through the real write path
(``Store.finish_run``, see ``bench_history.py`` for its shape), refreshes the planner statistics
(``Store.analyze``: what autovacuum does on a long-lived database), then times each query as
``schedctl tests`` / ``schedctl test`` call it. SQLite is the baseline; the target (issue 22:
p99 <= 100 ms) holds on PostgreSQL too. One line per figure: query, SQLite p99, PostgreSQL p99,
target, OK/MISSED.

PostgreSQL: ``--store postgresql://user@host/db`` (password in ``$SCHEDCTL_STORE_PASSWORD``; the
database must be migrated and empty), else a throwaway cluster is started for the run (needs
Debian's ``postgresql``, see scripts/ensure-postgres.sh).

    python bench/bench_history_engines.py [--tests 1000] [--runs 1000] [--reps 50] [--strict]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_history import START, TARGET_P99_MS, fill, timed  # noqa: E402

from scheduler.history.stats import History  # noqa: E402
from scheduler.store import Store  # noqa: E402


def queries(store: Store, now_runs: int) -> dict[str, Callable[[], object]]:
    now = START + timedelta(hours=now_runs)
    history = History(store)
    month = 30 * 86400.0
    flaky_one = history.tests(now, since_s=month, sort="flaky", limit=1)[0].nodeid
    return {
        "tests (30d, fail-rate, 50)": lambda: history.tests(now, since_s=month),
        "tests --sort duration": lambda: history.tests(now, since_s=month, sort="duration"),
        "tests --sort memory --tier": lambda: history.tests(
            now, since_s=month, sort="memory", tier="hourly"
        ),
        "tests --flaky": lambda: history.tests(now, since_s=month, flaky_only=True),
        "test NODEID (last 30)": lambda: history.test(flaky_one, now, since_s=month),
        "flaky score, one test": lambda: history.verdicts(
            [flaky_one], tier=None, from_run_id=store.first_run_id_since(now - timedelta(30))
        ),
    }


@contextmanager
def postgres(url: str | None) -> Iterator[Store]:
    if url:
        store = Store(url, password=os.environ.get("SCHEDCTL_STORE_PASSWORD"))
        yield store
        store.close()
        return
    from tests.pg import PgCluster

    with PgCluster.start() as cluster:
        store = Store(cluster.create_database(), password=cluster.password)
        yield store
        store.close()


def measure(store: Store, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    fill_s = fill(store, args.tests, args.runs, args.seed)
    store.analyze()
    return fill_s, {name: timed(fn, args.reps)[1] for name, fn in queries(store, args.runs).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--store", help="postgresql://user@host/db (default: a throwaway cluster)")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lite = Store(Path(tmp) / "schedctl.db")
        lite_fill, lite_p99 = measure(lite, args)
    with postgres(args.store) as pg:
        pg_fill, pg_p99 = measure(pg, args)
    print(f"store: {args.tests * args.runs:,} test results ({args.tests} tests x {args.runs} "
          f"runs) each; filled through Store.finish_run in {lite_fill:.0f} s (SQLite), "
          f"{pg_fill:.0f} s (PostgreSQL)")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"{'query (wall p99, ms)':30}{'SQLite':>10}{'Postgres':>10}   target   verdict (Postgres)"
    )
    ok = True
    for name, pg_ms in pg_p99.items():
        met = pg_ms <= TARGET_P99_MS
        ok = ok and met
        print(f"{name:30}{lite_p99[name]:>10.1f}{pg_ms:>10.1f}   <= {TARGET_P99_MS:.0f}   "
              f"{'OK' if met else 'MISSED'}")  # fmt: skip
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
