"""kill -9 / restart loop against a real daemon process: no slot lost, none run twice.

The daemon is tests/scheduler/daemon/harness.py (``schedctl daemon`` with every tier on a
seconds-level trigger, since cron's minute resolution would make this loop take hours). Each
cycle lets it run a random 0.5-4 s, SIGKILLs it (often mid-run), restarts it and times how long
until it holds the lock and answers on its socket. At the end every trigger slot between the
first and the last recorded one must have exactly one row, and no run may be left active or
leave a process behind.

    python bench/bench_restart.py [--cycles 10] [--every 2]
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from apscheduler.triggers.cron import CronTrigger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.local import LocalRunner  # noqa: E402
from runners.registry import instance_of  # noqa: E402
from scheduler.api import ApiClient  # noqa: E402
from scheduler.daemon.cron import slots_between  # noqa: E402
from scheduler.daemon.lock import StateLock  # noqa: E402
from scheduler.store.engine import Store  # noqa: E402

TESTS = "import time\n\ndef test_work():\n    time.sleep(1.5)\n"


def setup(base: Path) -> Path:
    project = base / "project"
    project.mkdir()
    (project / "test_work.py").write_text(TESTS)
    config = {
        "state_dir": str(base / "state"),
        "runner": "local",
        # The venv and the checkout may be unreachable for nobody, the default local.user of a
        # root daemon; the runs must really run, so that a kill can land mid-run.
        "local": {"allow_root": True},
        "project": {"path": str(project)},
        "daemon": {"metrics_address": None, "web_address": None, "grace": 1},
        "tiers": {"tick": {"schedule": "* * * * *", "timeout": 60, "misfire_grace": 1}},
    }
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, every: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    state = config.parent / "state"
    t0 = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.scheduler.daemon.harness",
                str(config),
                str(every),
                str(config.parent / "events.jsonl"),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    sock = state / "api.sock"
    while not (StateLock.holder(state) == proc.pid and sock.exists()):
        if proc.poll() is not None or time.monotonic() - t0 > 60:
            proc.kill()
            raise SystemExit(f"daemon did not start: {log.read_text()[-2000:]}")
        time.sleep(0.01)
    ApiClient(unix=sock, timeout=10).status()  # waits out a stale socket from the last kill
    return proc, time.monotonic() - t0


def local_runs(base: Path) -> LocalRunner:
    """A local runner of the bench daemon's instance: it sees its runs' processes by their tag."""
    return LocalRunner(instance=instance_of(base / "state"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        base = Path(tmp)
        config = setup(base)
        log = base / "daemon.log"
        ready_s: list[float] = []
        killed_mid_run = 0
        proc: subprocess.Popen[bytes] | None = None
        try:
            for _ in range(args.cycles):
                proc, took = start(config, args.every, log)
                ready_s.append(took)
                time.sleep(rng.uniform(0.5, 4.0))
                killed_mid_run += bool(local_runs(base).processes())
                proc.kill()
                proc.wait()
            proc, took = start(config, args.every, log)  # this start recovers the last kill
            ready_s.append(took)
            time.sleep(args.every + 2.5)
            proc.terminate()
            proc.wait(30)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

        store = Store(base / "state" / "schedctl.db")
        rows = [r for r in store.list_runs(tier="tick", limit=100_000) if r.slot]
        slots = [r.slot for r in rows if r.slot is not None]
        trigger = CronTrigger(second=f"*/{args.every}", timezone="UTC")
        first, last = min(slots), max(slots)
        expected = [first, *slots_between(trigger, first, last)]
        duplicates = len(slots) - len(set(slots))
        lost = sorted(set(expected) - set(slots))
        outcomes = collections.Counter(r.outcome.value for r in rows)
        active = store.active_runs()
        leftovers = sum(map(len, local_runs(base).processes().values()))
        print(f"cycles: {args.cycles} kill -9 ({killed_mid_run} mid-run), every {args.every}s")
        print(
            f"slots expected {len(expected)}, rows {len(slots)}, lost {len(lost)}, "
            f"duplicates {duplicates}"
        )
        print(f"outcomes: {dict(sorted(outcomes.items()))}")
        print(
            f"restart to ready: median {statistics.median(ready_s):.2f}s, max {max(ready_s):.2f}s"
        )
        print(f"active runs left: {len(active)}, processes left: {leftovers}")
        if lost:
            print("lost:", [s.isoformat() for s in lost])
            print("rows:", sorted((r.slot.isoformat(), r.outcome.value) for r in rows if r.slot))
        ok = not lost and not duplicates and not active and not leftovers
        print("OK" if ok else "FAILED")
        raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
