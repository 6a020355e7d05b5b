"""``/metrics`` scrape latency with about 2,000 series, over real HTTP on loopback.

Builds a daemon-sized registry: 24 tiers (run/test counters for every outcome and trigger, run
duration, fire lag and GPU wait histograms with samples), 8 fake GPUs with leases, and a store
holding 20,000 finished runs so the per-scrape store queries read a realistic table.
Target: p99 <= 20 ms per scrape (``--strict`` exits 1 when missed).

    python bench/bench_metrics.py [--scrapes 500] [--tiers 24] [--runs 20000] [--json] [--strict]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config, config_from_mapping
from scheduler.gpu import FakeProbe, write_fake_gpus
from scheduler.kernel.events import RunStarted
from scheduler.kernel.outcome import Outcome
from scheduler.logs import configure
from scheduler.metrics import Metrics, MetricsServer
from scheduler.store.engine import Store, runs

TARGET_P99_MS = 20.0
OUTCOMES = [o.value for o in Outcome if o.is_final]


def build(directory: Path, tiers: int, history: int) -> tuple[Metrics, Store]:
    config: Config = config_from_mapping(
        {
            "state_dir": str(directory / "state"),
            "project": {"path": str(directory)},
            "tiers": {
                f"tier{i:02d}": {"schedule": f"{i % 60} * * * *", "gpus": 1 if i % 2 else 0}
                for i in range(tiers)
            },
            "alerts": {"webhooks": [{"name": "lab", "url": "http://127.0.0.1:9/"}]},
        }
    )
    store = Store(config.db_path)
    gpus = directory / "gpus.json"
    write_fake_gpus(
        gpus,
        [
            {"index": i, "uuid": f"GPU-{i}", "memory_total_mib": 81559, "memory_used_mib": 100,
             "utilization_pct": 1, "temperature_c": 40}
            for i in range(8)
        ],
    )  # fmt: skip
    metrics = Metrics(CollectorRegistry(), config, store, gpu_probe=FakeProbe(gpus))
    seed(store, list(config.tiers), history)
    for i, tier in enumerate(config.tiers):
        for lag in (0.01, 0.3, 2.0, 40.0):
            metrics.on_event(RunStarted(i, tier, "schedule", directory, lag * 10, lag))
    active = store.create_run(tier="tier01", trigger="schedule", outcome="running")
    assert active is not None
    store.acquire_leases(active, "tier01", [(0, "GPU-0"), (1, "GPU-1")])
    return metrics, store


def seed(store: Store, tiers: list[str], history: int) -> None:
    """``history`` old finished runs (not counted: before start-up) plus one new run per outcome."""
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    rows: list[dict[str, Any]] = [
        {
            "tier": tiers[i % len(tiers)],
            "kind": "pytest",
            "trigger": "schedule",
            "outcome": OUTCOMES[i % len(OUTCOMES)],
            "queued_at": start + timedelta(minutes=i),
            "finished_at": start + timedelta(minutes=i, seconds=30),
            "duration_s": 30.0,
            "counts": {"passed": 10, "failed": i % 2},
        }
        for i in range(history)
    ]
    with store.begin() as conn:
        conn.execute(runs.insert(), rows)
    for tier in tiers:
        for outcome in OUTCOMES:
            for trigger in ("schedule", "manual"):
                run_id = store.create_run(tier=tier, trigger=trigger)
                assert run_id is not None
                store.finish_run(run_id, outcome=outcome, duration_s=12.0, counts={"passed": 3})


def scrape(conn: http.client.HTTPConnection) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"scrape failed: HTTP {response.status}")
    return elapsed, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--tiers", type=int, default=24)
    parser.add_argument("--runs", type=int, default=20_000, help="finished runs in the store")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    configure(json_logs=False, level="warning")  # as quiet as the daemon's info level
    with tempfile.TemporaryDirectory() as tmp:
        metrics, _store = build(Path(tmp), args.tiers, args.runs)
        server = MetricsServer(metrics.registry, "127.0.0.1:0", lambda: None)
        server.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            _, body = scrape(conn)  # warm-up; also the first catch-up of the run tally
            series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
            times = [scrape(conn)[0] * 1000 for _ in range(args.scrapes)]
            conn.close()
        finally:
            server.stop()
            metrics.close()
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    out = {
        "series": series,
        "bytes": len(body),
        "scrapes": args.scrapes,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "target_p99_ms": TARGET_P99_MS,
        "ratio_to_target": round(p99 / TARGET_P99_MS, 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"/metrics: {series} series, {len(body) / 1024:.0f} KiB, {args.scrapes} scrapes")
        print(f"  p50 {p50:6.2f} ms")
        print(
            f"  p99 {p99:6.2f} ms  (target <= {TARGET_P99_MS:.0f} ms, "
            f"ratio {p99 / TARGET_P99_MS:.2f}x: {'met' if p99 <= TARGET_P99_MS else 'MISSED'})"
        )
    return 1 if args.strict and p99 > TARGET_P99_MS else 0


if __name__ == "__main__":
    sys.exit(main())
