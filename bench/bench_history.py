"""History store at 1,000,000 test results: size, queries, inserts, whole processes.

The store is filled through the real write path (``Store.finish_run``: each run's results in one
bulk insert plus its rollups): 1,000 tests x 1,000 hourly runs (~42 days), a new commit every 3
runs, 2 % of the tests failing now and then (flaky at 5 %, with reruns that pass) and a few
regressions. Then each figure is measured ``--reps`` times:

- queries in this process, as ``schedctl tests`` / ``test`` / ``runs`` / ``show`` call the
  store (:class:`scheduler.history.stats.History`, ``Store``): wall p50/p99 and CPU p99;
- inserting a 500-test run's results (``finish_run``) into a copy of the full store, beside the
  same insert into an empty store (the target holds regardless of history size): through the
  full store (the daemon's write path) and through the sqlite3 writer (``schedctl run``'s),
  each with the WAL checkpointed before every insert as the product does between runs
  (``, checkpointed``) and, the first estimator, with inserts back to back and no checkpoint;
- whole ``schedctl`` processes as a user types them, beside ``schedctl --version`` (the same
  start-up, no query). The data is dated 2026-01/02, so these use ``--since 365d``.

Targets (issues 21/22): size <= 80 MiB per 1M results, every query <= 100 ms wall p99, an insert
<= 20 ms wall p99. ``--save`` writes the figures as JSON; ``--baseline`` prints a saved run (e.g.
the same script under the schema-5 code) side by side. ``--strict`` exits 1 when one is missed.

``--cache DIR`` (``make bench``: .bench-cache/) keeps the filled store between runs, one file per
staleness key: the generator's source and arguments, the schema version and the source of
``scheduler/store`` (the write path). Any change there builds it again, through the same path.

    python bench/bench_history.py [--db PATH | --cache DIR] [--reps 50] [--baseline FILE]
        [--save FILE]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.history.stats import History  # noqa: E402
from scheduler.kernel.heap import freeze_heap  # noqa: E402
from scheduler.kernel.outcome import Outcome  # noqa: E402
from scheduler.store import Store, TestResultRow  # noqa: E402
from scheduler.store.writer import SqliteWriter, open_writer  # noqa: E402

TARGET_QUERY_MS = 100.0
TARGET_INSERT_MS = 20.0
TARGET_MIB_PER_1M = 80.0
NAME_WIDTH = 72  # the longest figure name, "insert ... (sqlite3 writer, new connection), ..."
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def nodeids_of(tests: int) -> list[str]:
    return [f"tests/pkg{i % 40}/test_mod{i % 97}.py::test_case_{i}" for i in range(tests)]


def fill(store: Store, tests: int, runs: int, seed: int) -> float:
    rng = random.Random(seed)
    nodeids = nodeids_of(tests)
    flaky = set(rng.sample(range(tests), tests // 100))
    regressions = {i: rng.randrange(runs) for i in rng.sample(range(tests), tests // 100)}
    durations = [rng.lognormvariate(-3, 1.5) for _ in range(tests)]
    started = time.monotonic()
    for run in range(runs):
        when = START + timedelta(hours=run)
        run_id = store.create_run(tier="hourly", trigger="schedule", kind="pytest", queued_at=when)
        assert run_id is not None
        rows: list[TestResultRow] = []
        failed = False
        for i, nodeid in enumerate(nodeids):
            broken = i in regressions and regressions[i] <= run < regressions[i] + 6
            flake = i in flaky and rng.random() < 0.05
            duration = durations[i] * rng.uniform(0.8, 1.25)
            memory = 1 << (10 + i % 16)
            if flake:
                rows.append(TestResultRow(nodeid, "failed", duration, attempt=0, final=False))
                rows.append(TestResultRow(nodeid, "flaky", duration, attempt=1,
                                          peak_rss_bytes=memory))  # fmt: skip
            else:
                outcome = "failed" if broken else "passed"
                failed = failed or broken
                rows.append(TestResultRow(nodeid, outcome, duration, peak_rss_bytes=memory))
        store.finish_run(
            run_id, rows, outcome=Outcome.FAILED if failed else Outcome.PASSED,
            sha=f"{run // 3:040x}", finished_at=when + timedelta(minutes=20),
        )  # fmt: skip
        store.merge_staged()  # as the daemon's timer and the next run do (store/staging.py)
    return time.monotonic() - started


def cache_key(tests: int, runs: int, seed: int) -> str:
    """What the filled store depends on: when any of it changes, the cached store is stale."""
    from scheduler.store.schema import SCHEMA_VERSION

    digest = hashlib.sha256()
    for part in (inspect.getsource(fill), inspect.getsource(nodeids_of), START.isoformat(),
                 f"{tests} {runs} {seed} schema {SCHEMA_VERSION}"):  # fmt: skip
        digest.update(part.encode() + b"\0")
    for source in sorted((ROOT / "scheduler" / "store").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_store(cache: Path, tests: int, runs: int, seed: int) -> tuple[Path, float | None]:
    """The store filled by :func:`fill` for these arguments, kept in ``cache`` under its
    :func:`cache_key`; built (seconds returned) when missing, else reused (``None``). Built under
    a temporary name and renamed when complete: an interrupted build is never reused. Stores of
    other keys are removed."""
    path = cache / f"history-{tests}x{runs}-s{seed}-{cache_key(tests, runs, seed)}.db"
    if path.exists():
        return path, None
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f"building-{os.getpid()}.db"
    store = Store(building)
    seconds = fill(store, tests, runs, seed)
    store.engine.dispose()
    with sqlite3.connect(building) as conn:  # everything in the main file, no WAL beside it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for old in cache.glob(f"history-{tests}x{runs}-s{seed}-*.db*"):
        old.unlink()
    for leftover in cache.glob(f"{building.name}-*"):
        leftover.unlink()
    os.replace(building, path)
    return path, seconds


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float, float]:
    """Wall p50, wall p99 and CPU p99 in ms. CPU time (this process) is what the query costs;
    on a shared, loaded machine wall time also measures the neighbours."""
    fn()  # first call: SQLite page cache and compiled statements, as any long-lived process has
    # ... and its start-up heap frozen, as the processes that serve history do after start-up
    # (`schedctl daemon` and `schedctl web` for the pages, `schedctl tests` before its query).
    freeze_heap()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    gc.unfreeze()  # the insert figures are `schedctl run`'s, which freezes nothing
    return _summary(wall, cpu)


def _summary(wall: list[float], cpu: list[float]) -> tuple[float, float, float]:
    wall, cpu = sorted(wall), sorted(cpu)
    p99 = min(len(wall) - 1, int(0.99 * len(wall)))
    return statistics.median(wall), wall[p99], cpu[p99] if cpu else float("nan")


def timed_inserts(
    stores: dict[str, tuple[Path, bool, bool, bool]], tests: int, reps: int
) -> dict[str, tuple[float, float, float]]:
    """``finish_run`` of a run with 500 of the store's tests (one rerun, a few failures) into
    each of ``stores`` (``{figure: (file, through the sqlite3 writer, checkpointed, new
    connection)}``: the
    writer is what ``schedctl run`` uses, the full store the daemon's path), interleaved rep by
    rep so that a neighbour's load hits every figure alike.

    ``checkpointed``: before each insert, untimed, the WAL is checkpointed as the product does
    between two runs (the daemon's timer every 30 s, ``schedctl run`` while its tests run), so
    the insert meets the store a user's run meets. Without it (the first estimator, kept for
    comparison) the inserts follow each other with no checkpoint at all and the WAL grows by
    every run's pages (~3 MiB a run at 1M): each insert then reads the pages it changes out of
    the WAL (a lookup and a ``pread`` each, not the mapped file), which no user's run does.

    ``new connection`` (the writer's figures, checkpointed): each ``schedctl run`` is a process
    of its own, so its ``finish_run`` meets a connection that has not run the finish's
    statements yet (SQLite prepares them) nor looked up the run's test ids (the writer's cache
    is empty). The other figures keep one connection for all reps and so leave both out; here,
    untimed, a new writer opens the file and writes the run's row before each insert, as
    ``schedctl run`` does before its tests.
    """
    targets: dict[str, Store | SqliteWriter] = {}
    finished: dict[str, datetime] = {}
    for name, (path, writer, _checkpointed, _new) in stores.items():
        store = Store(path)
        finished[name] = START + timedelta(hours=store.max_run_id() + 1)
        targets[name] = store
        if writer:
            store.engine.dispose()
            opened = open_writer(path)
            assert opened is not None, "the sqlite3 writer refused the store"
            targets[name] = opened
    nodeids = nodeids_of(tests)[:500]
    wall: dict[str, list[float]] = {name: [] for name in stores}
    cpu: dict[str, list[float]] = {name: [] for name in stores}
    # The merge of the previous run's staged results, timed where it is one run's (checkpointed
    # figures at 1M): off the user's path, shown for what it costs the machine.
    merged: dict[str, list[float]] = {n: [] for n in stores if stores[n][2] and "@ 1M" in n}
    for rep in range(reps + 1):
        for name, path in [(name, stores[name][0]) for name in stores if stores[name][3]]:
            targets[name].close()  # a new process's connection
            reopened = open_writer(path)
            assert reopened is not None, "the sqlite3 writer refused the store"
            targets[name] = reopened
        for name, target in targets.items():
            run_id = target.create_run(tier="hourly", trigger="schedule", kind="pytest",
                                       queued_at=finished[name])  # fmt: skip
            assert run_id is not None
            rows = [
                TestResultRow(
                    n, "failed" if i == rep else "passed", 0.01 * i, peak_rss_bytes=1 << 20
                )
                for i, n in enumerate(nodeids)
            ]
            rows.append(TestResultRow(nodeids[0], "flaky", 0.5, attempt=1))
            if stores[name][2]:
                # Between two runs the product merges the staged results (schema 7: the
                # daemon's timer, `schedctl run` while its tests run), then checkpoints.
                m0 = time.perf_counter()
                target.merge_staged()
                if rep and name in merged:
                    merged[name].append((time.perf_counter() - m0) * 1000)
                target.checkpoint()
            t0, c0 = time.perf_counter(), time.process_time()
            target.finish_run(run_id, rows, outcome=Outcome.FAILED, finished_at=finished[name])
            if rep:  # the first: page cache and compiled statements
                wall[name].append((time.perf_counter() - t0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
    for target in targets.values():
        if isinstance(target, SqliteWriter):
            target.close()
        else:
            target.engine.dispose()
    figures = {name: _summary(wall[name], cpu[name]) for name in stores}
    for name, times in merged.items():
        if times:
            figures[name.replace("insert", "merge", 1)] = _summary(times, [])
    return figures


def insert_stores(source: Path, work: Path) -> dict[str, tuple[Path, bool, bool, bool]]:
    """The insert figures' stores: copies of ``source`` (1M) and empty ones, one per figure."""
    stores: dict[str, tuple[Path, bool, bool, bool]] = {}
    kinds = [(False, False, False), (False, True, False), (True, False, False)]
    kinds += [(True, True, False), (True, True, True)]  # writer, checkpointed, new connection
    for size in ("1M", "empty"):
        for writer, checkpointed, new in kinds:
            name = f"insert 500 results @ {size}"
            if writer:
                name += " (sqlite3 writer, new connection)" if new else " (sqlite3 writer)"
            if checkpointed:
                name += ", checkpointed"
            path = work / f"insert-{size}-{int(writer)}{int(checkpointed)}{int(new)}.db"
            if size == "1M":
                copy_store(source, path)
            stores[name] = (path, writer, checkpointed, new)
    return stores


def timed_process(argv: list[str], env: dict[str, str], reps: int) -> tuple[float, float, float]:
    """A whole process as a user types it: wall p50 and p99 (CPU not measured: ``nan``)."""
    first = subprocess.run(argv, check=False, env=env, capture_output=True, text=True)
    if first.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {first.returncode}: {first.stderr.strip()}")
    wall = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        wall.append((time.perf_counter() - t0) * 1000)
    return _summary(wall, [])


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--process-reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--db", type=Path, help="keep the store here; reuse it when it exists")
    parser.add_argument("--cache", type=Path, help="keep the store in this directory (see above)")
    parser.add_argument("--save", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--baseline", type=Path, help="figures saved by an earlier run")
    parser.add_argument("--label", default="this tree", help="what --save records these as")
    parser.add_argument("--inserts-only", action="store_true", help="only the insert figures")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.cache and not args.db:
            path, built = cached_store(args.cache, args.tests, args.runs, args.seed)
            reuse, fill_s = built is None, built or 0.0
            store = Store(path)
        else:
            path = args.db or work / "schedctl.db"
            reuse = path.exists()
            store = Store(path)
            fill_s = 0.0 if reuse else fill(store, args.tests, args.runs, args.seed)
        results = store.max_run_id() and len(store.test_results_for(1, attempts=True))
        size_mib = path.stat().st_size / 2**20
        per_1m = size_mib * 1_000_000 / max(1, args.tests * args.runs)
        figures = {} if args.inserts_only else query_figures(store, args)
        store.engine.dispose()
        figures.update(timed_inserts(insert_stores(path, work), args.tests, 30))
        if not args.inserts_only:
            figures.update(process_figures(path, work, args))
    shape = f"{args.tests} tests x {args.runs} runs"
    filled = f"filled through Store.finish_run in {fill_s:.0f} s" + (" (reused)" if reuse else "")
    print(f"store: {args.tests * args.runs:,} test results ({shape}, {results} in run 1), {filled}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ok = per_1m <= TARGET_MIB_PER_1M
    base_size = f"{baseline['mib_per_1m']:.1f}" if baseline else "-"
    print(f"{'figure':{NAME_WIDTH}}{'MiB/1M':>10}{'':20}{'baseline':>10}{'target':>8}")
    print(f"{'store size per 1M results':{NAME_WIDTH}}{per_1m:>10.1f}{'':20}{base_size:>10}"
          f"{TARGET_MIB_PER_1M:>8.0f}   {'OK' if ok else 'MISSED'}")  # fmt: skip
    print(f"{'figure (ms)':{NAME_WIDTH}}{'wall p50':>10}{'wall p99':>10}{'CPU p99':>10}"
          f"{'base p99':>10}{'target':>8}   (wall p99; baseline: "
          f"{baseline['label'] if baseline else 'none'})")  # fmt: skip
    for name, (p50, p99, cpu99) in figures.items():
        target = figure_target(name)
        met = target is None or p99 <= target
        ok = ok and met
        before = baseline["figures"].get(name) if baseline else None
        print(f"{name:{NAME_WIDTH}}{p50:>10.1f}{p99:>10.1f}{cpu99:>10.1f}"
              f"{before[1] if before else float('nan'):>10.1f}"
              f"{'-' if target is None else f'{target:.0f}':>8}   "
              f"{'' if target is None else 'OK' if met else 'MISSED'}")  # fmt: skip
    if args.save:
        saved = {"label": args.label, "mib_per_1m": per_1m, "figures": figures}
        args.save.write_text(json.dumps(saved, indent=1))
    return 1 if args.strict and not ok else 0


def figure_target(name: str) -> float | None:
    if name.startswith("insert"):
        return TARGET_INSERT_MS
    if name.startswith("merge"):
        return None  # the merge of staged results runs off the user's path (store/staging.py)
    if name.startswith("process: schedctl --version"):
        return None
    if name.startswith("process:"):
        return None  # start-up is the lazy CLI's target (issue 21); shown beside --version
    return TARGET_QUERY_MS


def query_figures(store: Store, args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    now = START + timedelta(hours=args.runs)
    history = History(store)
    month = 30 * 86400.0
    flaky_one = history.tests(now, since_s=month, sort="flaky", limit=1)[0].nodeid
    newest = store.max_run_id()

    def show() -> object:
        # what `schedctl show ID` reads (scheduler/cli/history.py show_payload)
        record = store.get_run(newest)
        tests = store.test_results_for(newest, attempts=True)
        green = store.last_green(record.tier, before_id=record.id)
        return record.to_json(), tests, store.quarantine_list(), green

    queries: dict[str, Callable[[], object]] = {
        "tests (30d, fail-rate, 50)": lambda: history.tests(now, since_s=month),
        "tests --sort duration": lambda: history.tests(now, since_s=month, sort="duration"),
        "tests --sort memory": lambda: history.tests(now, since_s=month, sort="memory"),
        "tests --sort flaky": lambda: history.tests(now, since_s=month, sort="flaky"),
        "tests --tier hourly": lambda: history.tests(now, since_s=month, tier="hourly"),
        "tests --flaky": lambda: history.tests(now, since_s=month, flaky_only=True),
        "tests --since 365d": lambda: history.tests(now, since_s=365 * 86400.0),
        "test NODEID (last 30)": lambda: history.test(flaky_one, now, since_s=month),
        "flaky score, one test": lambda: history.verdicts(
            [flaky_one], tier=None, from_run_id=store.first_run_id_since(now - timedelta(30))
        ),
        "runs --limit 10000 --json": lambda: json.dumps(runs_json(store), default=str),
        "show ID": show,
    }
    return {name: timed(fn, args.reps) for name, fn in queries.items()}


def runs_json(store: Store) -> list[dict[str, object]]:
    """What `schedctl runs --limit 10000 --json` serialises (to_json per record before schema 6)."""
    if hasattr(store, "runs_json"):
        return store.runs_json(limit=10_000)
    return [r.to_json() for r in store.list_runs(limit=10_000)]


def process_figures(
    path: Path, work: Path, args: argparse.Namespace
) -> dict[str, tuple[float, float, float]]:
    state = work / "state"
    state.mkdir()
    (state / "schedctl.db").symlink_to(path.resolve())
    config = work / "config.yaml"
    config.write_text(
        f"state_dir: {json.dumps(str(state))}\nrunner: local\n"
        f"project: {{path: {json.dumps(str(ROOT / 'examples' / 'suite'))}}}\n"
        "tiers: {hourly: {schedule: '15 * * * *', timeout: 60, markers: hourly}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEDCTL_CONFIG": str(config)}
    schedctl = [sys.executable, "-m", "scheduler.cli", "--config", str(config)]
    nodeid = nodeids_of(args.tests)[0]
    commands = {
        "process: schedctl --version": ["--version"],
        "process: schedctl runs --limit 10000 --json": ["runs", "--limit", "10000", "--json"],
        "process: schedctl show ID --json": ["show", str(args.runs), "--json"],
        "process: schedctl tests --since 365d": ["tests", "--since", "365d"],
        "process: schedctl tests --sort flaky --json": [
            "tests",
            "--since",
            "365d",
            "--sort",
            "flaky",
            "--json",
        ],
        "process: schedctl test NODEID --json": ["test", nodeid, "--since", "365d", "--json"],
    }
    return {
        name: timed_process([*schedctl, *argv], env, args.process_reps)
        for name, argv in commands.items()
    }


if __name__ == "__main__":
    sys.exit(main())
