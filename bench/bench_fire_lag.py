"""Daemon fire lag: seconds between a slot's time and the moment its run is dispatched.

Several tiers are rescheduled to fire every second (a seconds-level APScheduler trigger on the
real daemon, SQLAlchemy job store and dispatcher; the fake runner so no test process runs).
Target: p99 <= 50 ms.

    python bench/bench_fire_lag.py [--seconds 25] [--tiers 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apscheduler.triggers.cron import CronTrigger  # noqa: E402

from runners.fake import FakeRunner  # noqa: E402
from runners.registry import RunnerFactory  # noqa: E402
from scheduler.config import config_from_mapping  # noqa: E402
from scheduler.daemon.scheduler import JOB_PREFIX, Daemon  # noqa: E402
from scheduler.kernel.events import Event, RunStarted  # noqa: E402
from scheduler.run.dispatch import Dispatcher  # noqa: E402
from scheduler.store.engine import Store  # noqa: E402

TARGET_P99_S = 0.050


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=25)
    parser.add_argument("--tiers", type=int, default=5)
    args = parser.parse_args()
    lags: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RunStarted) and event.fire_lag_s is not None:
            lags.append(event.fire_lag_s)

    with tempfile.TemporaryDirectory() as tmp:
        tiers = {f"t{i}": {"schedule": "0 3 * * 0", "timeout": 60} for i in range(args.tiers)}
        config = config_from_mapping(
            {"state_dir": tmp, "runner": "local", "project": {"path": tmp}, "tiers": tiers}
        )
        store = Store(config.db_path)
        fake = FakeRunner()
        dispatcher = Dispatcher(config, store, RunnerFactory({"local": fake}))
        dispatcher.add_listener(on_event)
        daemon = Daemon(config, store, dispatcher)
        daemon.start()
        for name in tiers:
            daemon.scheduler.reschedule_job(JOB_PREFIX + name, trigger=CronTrigger(second="*"))
        time.sleep(args.seconds)
        daemon.stop(grace_s=5)
    if not lags:
        raise SystemExit("no fires observed")
    p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
    print(f"fires observed          {len(lags)}")
    print(f"fire lag p50            {p50 * 1000:.1f} ms")
    print(
        f"fire lag p99            {p99 * 1000:.1f} ms  target <= {TARGET_P99_S * 1000:.0f} ms  "
        f"({'OK' if p99 <= TARGET_P99_S else 'MISSED'}; {p99 / TARGET_P99_S:.2f} of target)"
    )
    print(f"fire lag max            {max(lags) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
