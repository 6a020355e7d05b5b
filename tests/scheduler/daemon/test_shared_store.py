"""Two real daemon processes on one PostgreSQL store, seconds-level slots, about a minute.

Both daemons schedule both tiers (floating); every slot must end with exactly one row, none
missing; the daemon that owns a running run is killed with SIGKILL and the survivor records that
run ``interrupted`` once (after the heartbeat timeout) and keeps firing; the alerts the flipping
tier raises are delivered once each to a local webhook receiver, whichever daemon sends them.

Every phase ends on a condition (a running run, the interrupt, enough slots, alerts sent), not
on a time: the test lasts as long as the slots it needs (``MIN_SLOTS`` of ``EVERY_S`` seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runners.local import LocalRunner
from runners.registry import instance_of
from scheduler.config import load_config
from scheduler.daemon.hosts import owner_key
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord, Store
from tests.conftest import ROOT, tier
from tests.pg import PgCluster
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

EVERY_S = 2
SLOW_S = 5
FLIP_S = 10
"""test_flips fails in every other FLIP_S-second window: several fast runs in each."""
MIN_SLOTS = 20


def project_tests(hold: Path) -> str:
    """The project's tests. The slow one runs SLOW_S and, while ``hold`` exists, on: the test
    holds it open so the run whose daemon it kills is certainly still running at the kill."""
    return f"""
import os, time, pytest

@pytest.mark.fast
def test_flips():
    # Fails in every other {FLIP_S}-second window: the tier alternates, so alerts fire and
    # resolve.
    assert (int(time.time()) // {FLIP_S}) % 2 == 0

@pytest.mark.slowish
def test_sleeps():
    end = time.monotonic() + {SLOW_S}
    while time.monotonic() < end or os.path.exists({str(hold)!r}):
        time.sleep(0.05)
"""


PYTEST_INI = "[pytest]\nmarkers =\n    fast: quick\n    slowish: sleeps\n"


class Box:
    """One daemon: its config (own state dir, shared store), process and event log."""

    def __init__(self, root: Path, host: str, data: dict[str, Any], password: str) -> None:
        self.host = host
        self.dir = root / host
        self.dir.mkdir()
        self.config = self.dir / "config.yaml"
        self.config.write_text(
            json.dumps({**data, "host": host, "state_dir": str(self.dir / "state")})
        )
        self.events = self.dir / "events.jsonl"
        self.password = password
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(PYTHONPATH=str(ROOT), SCHEDCTL_STORE_PASSWORD=self.password)
        log = (self.dir / "daemon.log").open("w")
        argv = [sys.executable, "-m", "tests.scheduler.daemon.harness", str(self.config)]
        self.proc = subprocess.Popen(
            [*argv, str(EVERY_S), str(self.events)],
            cwd=ROOT, env=env, stdout=log, stderr=log, text=True,
        )  # fmt: skip
        return self.proc

    def finished_events(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        lines = [json.loads(x) for x in self.events.read_text().splitlines() if x.strip()]
        return [e for e in lines if e["event"] == "RunFinished"]

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text()[-3000:]

    def reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        LocalRunner(instance=instance_of(load_config(self.config).state_dir)).reap_orphans(set())


@pytest.fixture
def boxes(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str, httpserver: HTTPServer
) -> Iterator[tuple[Box, Box]]:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_things.py").write_text(project_tests(tmp_path / "hold"))
    (project / "pytest.ini").write_text(PYTEST_INI)
    data = {
        "runner": "local",
        "local": {"allow_root": True},
        "project": {"path": str(project)},
        "tiers": {
            "fast": tier(markers="fast", timeout=60),
            "slow": tier(markers="slowish", timeout=120),
        },
        "store": {"url": pg_url, "heartbeat": 1, "host_timeout": 6},
        "daemon": {"metrics_address": None, "web_address": None, "grace": 2},
        "alerts": {"webhooks": [{"name": "lab", "url": httpserver.url_for("/hook")}]},
    }
    pair = (
        Box(tmp_path, "box-a", data, pg_cluster.password),
        Box(tmp_path, "box-b", data, pg_cluster.password),
    )
    yield pair
    for box in pair:
        box.reap()


def slots_of(store: Store, tier_name: str) -> list[RunRecord]:
    return [r for r in store.list_runs(tier=tier_name, limit=10_000) if r.slot is not None]


def test_two_daemons_one_store_each_slot_once_and_a_survivor(
    boxes: tuple[Box, Box], pg_cluster: PgCluster, pg_url: str, httpserver: HTTPServer
) -> None:
    store = Store(pg_url, password=pg_cluster.password)
    for box in boxes:
        box.start()

    # Phase 1 (both alive): wait for a slow run to be running, then kill its owner.
    def running_slow() -> RunRecord | None:
        for box in boxes:
            assert box.proc is not None and box.proc.poll() is None, box.log()
        return next((r for r in store.active_runs("slow") if r.outcome is Outcome.RUNNING), None)

    victim_run = wait_for(running_slow, 60, "a running slow run")
    assert victim_run is not None
    wait_for(lambda: len(slots_of(store, "fast")) >= 5, 60, "five fast slots with both daemons")
    hold = boxes[0].dir.parent / "hold"
    hold.touch()  # a slow run now lasts until the kill, however loaded the machine
    victim_run = wait_for(running_slow, 60, "a running slow run to kill its owner during")
    assert victim_run is not None
    victim = next(b for b in boxes if b.host == victim_run.host)
    survivor = next(b for b in boxes if b is not victim)
    assert victim.proc is not None and survivor.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    killed_at = datetime.now(timezone.utc)
    # Its last heartbeat (the survivor deletes it once it records the run, >= 6 s from now).
    last_beat = max(
        datetime.fromisoformat(stamp)
        for stamp in store.meta_with_prefix(owner_key(victim_run)).values()
    )
    hold.unlink()

    # Phase 2: the survivor records the dead daemon's run interrupted, once, after the timeout.
    def interrupted() -> RunRecord | None:
        record = store.get_run(victim_run.id)
        return record if record.outcome is Outcome.INTERRUPTED else None

    record = wait_for(interrupted, 40, "the survivor to record the dead daemon's run")
    assert record is not None
    assert f"host {victim.host} stopped sending heartbeats" in record.reason
    assert record.reason.endswith(f"recorded by host {survivor.host}")
    assert record.finished_at is not None
    # Not before the dead daemon's heartbeat is host_timeout (6 s) old: measured from its last
    # heartbeat, not from the kill (on a loaded machine the last one can be > 1 s before it).
    assert record.finished_at - last_beat >= timedelta(seconds=6)

    # ... and keeps firing both tiers, the slow one included once the dead run is recorded.
    def fired_after(tier_name: str, after: datetime) -> bool:
        return any(
            r.host == survivor.host and r.started_at is not None and r.started_at > after
            and r.outcome not in (Outcome.SKIPPED_OVERLAP, Outcome.MISSED)
            for r in slots_of(store, tier_name)
        )  # fmt: skip

    assert record.finished_at is not None
    finished_dead = record.finished_at
    wait_for(lambda: fired_after("slow", finished_dead), 60, "a slow run after the interrupt")
    wait_for(lambda: fired_after("fast", killed_at), 30, "a fast run after the kill")
    enough = MIN_SLOTS * EVERY_S * 3  # s: generous, for a loaded machine
    for tier_name in ("fast", "slow"):
        wait_for(
            lambda t=tier_name: len(slots_of(store, t)) >= MIN_SLOTS,
            enough,
            f"{tier_name}: {MIN_SLOTS} slots",
        )

    def alerts_sent() -> bool:
        return len(store.outbox_rows(states=["sent"], limit=10_000)) >= 2

    # The flipping tier fires and resolves within two FLIP_S windows of failing runs.
    wait_for(alerts_sent, FLIP_S * 6, "the flipping tier's alert sent and resolved")

    # Let the survivor deliver what is pending, then stop it gracefully.
    def delivered() -> bool:
        # (a row the victim claimed as it died stays `sending` until its lease runs out)
        return store.outbox_counts().get("pending", 0) == 0

    wait_for(delivered, 60, "the outbox to drain")
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.proc.wait(60) == 0, survivor.log()
    ended_at = datetime.now(timezone.utc)

    # Every slot: exactly one row (the unique key forbids two), none missing.
    for tier_name in ("fast", "slow"):
        rows = slots_of(store, tier_name)
        slots = sorted(r.slot for r in rows if r.slot is not None)
        assert len(slots) == len(set(slots))
        assert all(s.second % EVERY_S == 0 and s.microsecond == 0 for s in slots)
        expected = []
        at = slots[0]
        while at <= slots[-1]:
            expected.append(at)
            at += timedelta(seconds=EVERY_S)
        assert slots == expected, f"{tier_name}: missing {sorted(set(expected) - set(slots))}"
        assert slots[-1] >= ended_at - timedelta(seconds=16)  # fired up to the stop
        assert len(slots) >= MIN_SLOTS

    # The dead run was recorded once: one RunFinished for it, from the survivor.
    finished = [e for box in boxes for e in box.finished_events() if e["run_id"] == record.id]
    assert len(finished) == 1 and finished[0]["outcome"] == "interrupted"
    assert record.id not in {e["run_id"] for e in victim.finished_events()}

    # Alerts: each delivery reached the receiver once, whichever daemon sent it.
    received = [json.loads(req.get_data()) for req, _resp in httpserver.log]
    ids = [body["id"] for body in received]
    assert len(ids) == len(set(ids)), f"an alert was delivered twice: {ids}"
    sent = {r.id for r in store.outbox_rows(states=["sent"], limit=10_000)}
    # A row the victim claimed as it died stays `sending` (it may or may not have left).
    claimed = {r.id for r in store.outbox_rows(states=["sending"], limit=10_000)}
    assert sent <= set(ids) <= sent | claimed
    assert len(sent) >= 2, "the flipping tier should have fired and resolved an alert"
    for box in boxes:  # the store password never reaches the logs
        assert pg_cluster.password not in (box.dir / "daemon.log").read_text()
    store.close()
