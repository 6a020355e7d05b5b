"""The history queries at 1,000,000 test results on both engines, side by side.

Fills a SQLite file with a history through the real write path (``Store.finish_run``, see
``bench_history.py`` for its shape) and a PostgreSQL database with the same history as a lab moves
it there (``schedctl store copy``: the same rows, the same ids), refreshes the planner statistics
(``Store.analyze``: what autovacuum does on a long-lived database), then times each query as
``schedctl tests`` / ``schedctl test`` call it. SQLite is the baseline; the target (issue 22:
p99 <= 100 ms) holds on PostgreSQL too. One line per figure: query, SQLite p99, PostgreSQL p99,
target, OK/MISSED.

PostgreSQL: ``--store postgresql://user@host/db`` (password in ``$SCHEDCTL_STORE_PASSWORD``; the
database must be migrated; one that already holds runs is reused as it is, not filled again),
else a throwaway cluster is started for the run (needs Debian's ``postgresql``, see
scripts/ensure-postgres.sh). ``--db PATH`` keeps the SQLite file (reused when it exists): a fill
takes minutes per engine, so iterate on queries against kept stores.

    python bench/bench_history_engines.py [--tests 1000] [--runs 1000] [--reps 50] [--strict]
        [--db PATH | --cache DIR] [--store URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402
from bench_history import START, cache_key, cached_store, fill, timed  # noqa: E402
from bench_history import TARGET_QUERY_MS as TARGET_P99_MS  # noqa: E402

from scheduler.history.stats import History  # noqa: E402
from scheduler.store import Store  # noqa: E402
from scheduler.store.copy import copy_store  # noqa: E402


def queries(store: Store, now_runs: int) -> dict[str, Callable[[], object]]:
    now = START + timedelta(hours=now_runs)
    history = History(store)
    month = 30 * 86400.0
    flaky_one = history.tests(now, since_s=month, sort="flaky", limit=1)[0].nodeid
    return {
        "tests (30d, fail-rate, 50)": lambda: history.tests(now, since_s=month),
        "tests --sort duration": lambda: history.tests(now, since_s=month, sort="duration"),
        "tests --sort memory": lambda: history.tests(now, since_s=month, sort="memory"),
        "tests --sort flaky": lambda: history.tests(now, since_s=month, sort="flaky"),
        "tests --sort memory --tier": lambda: history.tests(
            now, since_s=month, sort="memory", tier="hourly"
        ),
        "tests --flaky": lambda: history.tests(now, since_s=month, flaky_only=True),
        "tests --since 365d": lambda: history.tests(now, since_s=365 * 86400.0),
        "test NODEID (last 30)": lambda: history.test(flaky_one, now, since_s=month),
        "flaky score, one test": lambda: history.verdicts(
            [flaky_one], tier=None, from_run_id=store.first_run_id_since(now - timedelta(30))
        ),
    }


@dataclass
class PgCache:
    """The throwaway cluster's database as ``schedctl store copy`` filled it, kept in the bench
    cache as a data-only ``pg_dump`` (the schema is the cluster's migrated template): the next
    run restores it (COPY) instead of copying a million rows again. Its name carries
    :func:`bench_history.cache_key` (generator, schema version, ``scheduler/store``'s source, so
    ``store copy`` too) and PostgreSQL's major version."""

    cluster: Any  # tests.pg.PgCluster
    url: str
    path: Path

    @classmethod
    def of(cls, cluster: Any, url: str, cache: Path, args: argparse.Namespace) -> PgCache:
        key = cache_key(args.tests, args.runs, args.seed)
        name = f"pg{cluster.bindir.parent.name}-{args.tests}x{args.runs}-s{args.seed}-{key}.dump"
        return cls(cluster, url, cache / name)

    def _tool(self, name: str, *argv: str) -> None:
        cluster = self.cluster
        subprocess.run(
            [str(cluster.bindir / name), "-h", str(cluster.socket_dir), "-p", str(cluster.port),
             "-U", "postgres", "-d", self.url.rsplit("/", 1)[-1], *argv],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip

    def restore(self) -> float | None:
        """Seconds to restore the kept dump into the (empty) database; ``None``: none kept."""
        if not self.path.exists():
            return None
        started = time.perf_counter()
        self._tool("pg_restore", "--data-only", "--disable-triggers", "--exit-on-error",
                   str(self.path))  # fmt: skip
        return time.perf_counter() - started

    def save(self) -> None:
        building = self.path.with_name(f"building-{os.getpid()}.dump")
        self._tool("pg_dump", "-Fc", "--data-only", "--exclude-table-data=schedctl_meta",
                   "-f", str(building))  # fmt: skip
        for old in self.path.parent.glob(self.path.name.rsplit("-", 1)[0] + "-*.dump"):
            old.unlink()
        os.replace(building, self.path)


@contextmanager
def postgres(
    url: str | None, cache: Path | None, args: argparse.Namespace
) -> Iterator[tuple[Store, PgCache | None]]:
    if url:
        store = Store(url, password=os.environ.get("SCHEDCTL_STORE_PASSWORD"))
        yield store, None
        store.close()
        return
    from tests.pg import PgCluster

    with PgCluster.start() as cluster:
        target = cluster.create_database()
        store = Store(target, password=cluster.password)
        yield store, PgCache.of(cluster, target, cache, args) if cache else None
        store.close()


Figures = dict[str, tuple[float, float, float]]


def copied(source: Store, target: Store, kept: PgCache | None = None) -> float:
    """Fill ``target`` with ``source``'s history as ``schedctl store copy`` moves a box's SQLite
    history into a shared PostgreSQL store (one transaction; ids kept: the target is empty) --
    or restore what an earlier run's copy left in ``kept``, and keep this one's there."""
    if kept is not None:
        restored = kept.restore()
        if restored is not None:
            print(f"PostgreSQL: restored {kept.path.name} (an earlier `store copy`) in "
                  f"{restored:.0f} s")  # fmt: skip
            return restored
    started = time.perf_counter()
    copy_store(source, target, host="bench")
    seconds = time.perf_counter() - started
    if kept is not None:
        kept.save()
    return seconds


def visible_share(store: Store) -> float | None:
    """PostgreSQL: the share of ``test_results``' pages the visibility map marks all-visible
    (an index-only scan reads the heap for the others); ``None`` on SQLite."""
    if not store.is_postgres:
        return None
    with store.engine.connect() as conn:
        pages, visible = conn.execute(
            sa.text("SELECT relpages, relallvisible FROM pg_class WHERE relname = 'test_results'")
        ).one()
    return float(visible) / pages if pages else 1.0


def settle(store: Store, passes: int = 3) -> None:
    """Planner statistics and the visibility map as a long-lived database has them
    (``Store.analyze``: VACUUM ANALYZE, what autovacuum does). Right after a bulk copy one
    VACUUM leaves much of ``test_results`` not all-visible (measured: 0-55 %; the copy's
    tuples are not yet hinted as committed), and the planner then picks bitmap heap scans over
    the covering index: vacuum again, as autovacuum would, until it is."""
    for _ in range(passes):
        store.analyze()
        share = visible_share(store)
        if share is None or share >= 0.99:
            return


def measure(
    store: Store, args: argparse.Namespace, source: Store | None = None, kept: PgCache | None = None
) -> tuple[float | None, Figures]:
    """Fill ``store`` unless it holds runs already (``None``: reused) -- from ``source`` when
    given, else through ``Store.finish_run`` -- then time each query: wall p50, wall p99, CPU
    p99 (ms)."""
    if store.max_run_id():
        fill_s = None
    elif source is not None:
        fill_s = copied(source, store, kept)
    else:
        fill_s = fill(store, args.tests, args.runs, args.seed)
    if fill_s is not None:
        settle(store)
    only = set(args.only or ())
    return fill_s, {
        name: timed(fn, args.reps)
        for name, fn in queries(store, args.runs).items()
        if not only or name in only
    }


def _filled(seconds: float | None) -> str:
    return "reused" if seconds is None else f"filled in {seconds:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--store", help="postgresql://user@host/db (default: a throwaway cluster)")
    parser.add_argument("--db", type=Path, help="keep the SQLite store here; reuse it if it exists")
    parser.add_argument(
        "--cache", type=Path, help="keep the SQLite store in this directory (bench_history.py)"
    )
    parser.add_argument("--only", action="append", help="time only this query (repeatable)")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        lite_path = args.db or Path(tmp) / "schedctl.db"
        if args.cache and not args.db:
            lite_path, built = cached_store(args.cache, args.tests, args.runs, args.seed)
            kept = "kept from an earlier run" if built is None else f"built in {built:.0f} s"
            print(f"SQLite: {lite_path.name} in {args.cache}, {kept}")
        lite = Store(lite_path)
        lite_fill, lite_ms = measure(lite, args)
        with postgres(args.store, args.cache, args) as (pg, kept):
            pg_fill, pg_ms = measure(pg, args, source=lite, kept=kept)
            pg_visible = visible_share(pg)
        lite.close()
    print(f"store: {args.tests * args.runs:,} test results ({args.tests} tests x {args.runs} "
          f"runs) each; SQLite through Store.finish_run, {_filled(lite_fill)}; PostgreSQL by "
          f"`schedctl store copy` from it, {_filled(pg_fill)}")  # fmt: skip
    share = pg_visible if pg_visible is not None else float("nan")
    print(f"PostgreSQL test_results pages all-visible (index-only scans): {share:.0%}")
    print(f"load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at "
          f"the end, on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'query (wall ms)':30}{'SQLite p50':>11}{'p99':>7}{'CPU p99':>8}"
          f"{'Postgres p50':>13}{'p99':>7}{'CPU p99':>8}   target  both engines")  # fmt: skip
    ok = True
    for name, (pg50, pg99, pgcpu) in pg_ms.items():
        lite50, lite99, litecpu = lite_ms[name]
        met = max(pg99, lite99) <= TARGET_P99_MS
        ok = ok and met
        print(f"{name:30}{lite50:>11.1f}{lite99:>7.1f}{litecpu:>8.1f}{pg50:>13.1f}{pg99:>7.1f}"
              f"{pgcpu:>8.1f}   <= {TARGET_P99_MS:.0f}  {'OK' if met else 'MISSED'}")  # fmt: skip
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
