"""The daemon: APScheduler fires tiers on their cron schedules and hands them to the dispatcher.

This is the only module that talks to APScheduler. Jobs live in a SQLAlchemyJobStore on the
same SQLite file, so a restart knows which slot was due while the daemon was down (APScheduler's
misfire handling: run once within ``misfire_grace``, coalesced; older ones become ``missed``).
Config is the source of truth: jobs are rebuilt from it at every start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from runners.base import Outcome
from scheduler.config import Config
from scheduler.cron import latest_slot, parse_cron
from scheduler.dispatch import Dispatcher, RunRequest
from scheduler.errors import DaemonLocked
from scheduler.events import RunFinished, SlotMissed
from scheduler.store import Store

log = structlog.get_logger("schedctl.daemon")

JOB_PREFIX = "tier:"

# Jobs are pickled by reference ("scheduler.daemon:fire"), so the job function finds its daemon
# through this process-local table; entries vanish with their daemon.
_LIVE: weakref.WeakValueDictionary[str, Daemon] = weakref.WeakValueDictionary()


def fire(daemon_key: str, tier: str) -> None:
    """APScheduler job entry point for one tier's cron slot."""
    daemon = _LIVE.get(daemon_key)
    if daemon is None:
        log.error("fire_without_daemon", tier=tier, key=daemon_key)
        return
    daemon.fire(tier)


class StateLock:
    """An exclusive flock on ``<state_dir>/daemon.lock``, holding our pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fh: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise DaemonLocked(
                f"another schedctl daemon (pid {holder}) already runs on state dir "
                f"{self.path.parent}; stop it first or use another state_dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @staticmethod
    def holder(state_dir: Path) -> int | None:
        """The pid of the daemon holding the lock, or ``None`` when no daemon runs."""
        path = state_dir / "daemon.lock"
        if not path.exists():
            return None
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                text = fh.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class Daemon:
    """Owns the APScheduler instance and the lifecycle boot -> start -> stop."""

    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.tz = ZoneInfo(config.timezone)
        self.key = str(config.state_dir.resolve())
        self.lock = StateLock(config.state_dir)
        self.scheduler: Any = None
        self.started = threading.Event()
        self._runs_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.lock.acquire()
        try:
            self.dispatcher.recover()
            self.scheduler = BackgroundScheduler(
                jobstores={"default": SQLAlchemyJobStore(url=self.store.url)},
                executors={"default": ThreadPoolExecutor(max(4, len(self.config.tiers) + 2))},
                job_defaults={"coalesce": True, "max_instances": 1},
                timezone=self.tz,
            )
            self.scheduler.add_listener(
                self._on_job_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
            )
            _LIVE[self.key] = self
            self.scheduler.start(paused=True)
            self._sync_jobs()
            self.scheduler.resume()
        except BaseException:
            self.lock.release()
            raise
        self.started.set()
        log.info(
            "daemon_started", tiers=list(self.config.tiers), state_dir=str(self.config.state_dir)
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Stop firing, let running runs finish up to the grace, then cancel and record them."""
        grace = self.config.daemon.grace if grace_s is None else grace_s
        log.info("daemon_stopping", grace_s=grace, active=self.dispatcher.active_run_ids())
        self.dispatcher.stop_accepting()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = datetime.now(timezone.utc) + timedelta(seconds=grace)
        while self.dispatcher.active_run_ids() and datetime.now(timezone.utc) < deadline:
            threading.Event().wait(0.2)
        if self.dispatcher.active_run_ids():
            self.dispatcher.cancel_all("daemon stopped: grace period ran out")
        for thread in self._threads:
            thread.join(timeout=30)
        _LIVE.pop(self.key, None)
        self.lock.release()
        self.started.clear()
        log.info("daemon_stopped")

    # -- scheduling ------------------------------------------------------------------------------

    def _sync_jobs(self) -> None:
        wanted = {
            JOB_PREFIX + name: tier
            for name, tier in self.config.tiers.items()
            if tier.schedule and tier.enabled
        }
        for job in self.scheduler.get_jobs():
            if job.id not in wanted:
                self.scheduler.remove_job(job.id)
        for job_id, tier in wanted.items():
            assert tier.schedule is not None
            trigger = parse_cron(tier.schedule, self.tz)
            existing = self.scheduler.get_job(job_id)
            same = (
                existing is not None
                and str(existing.trigger) == str(trigger)
                and existing.misfire_grace_time == int(tier.misfire_grace)
                and existing.args == (self.key, job_id.removeprefix(JOB_PREFIX))
            )
            if same:
                continue
            self.scheduler.add_job(
                fire,
                trigger=trigger,
                args=(self.key, job_id.removeprefix(JOB_PREFIX)),
                id=job_id,
                name=job_id,
                replace_existing=True,
                misfire_grace_time=int(tier.misfire_grace),
            )

    def next_fire_times(self) -> dict[str, datetime | None]:
        out: dict[str, datetime | None] = {}
        for name in self.config.tiers:
            job = self.scheduler.get_job(JOB_PREFIX + name) if self.scheduler else None
            out[name] = job.next_run_time if job is not None else None
        return out

    def fire(self, tier: str) -> None:
        """Run the slot that is due now for ``tier`` (called in an APScheduler worker thread)."""
        now = datetime.now(timezone.utc)
        tier_cfg = self.config.tier(tier)
        assert tier_cfg.schedule is not None
        trigger = parse_cron(tier_cfg.schedule, self.tz)
        lookback = timedelta(seconds=tier_cfg.misfire_grace + 120)
        slot = latest_slot(trigger, now, lookback) or now.replace(second=0, microsecond=0)
        slot = slot.astimezone(timezone.utc)
        lag = (now - slot).total_seconds()
        log.info("tier_fired", tier=tier, slot=slot.isoformat(), fire_lag_s=round(lag, 4))
        self.dispatcher.run(RunRequest(tier=tier, trigger="schedule", slot=slot, fire_lag_s=lag))

    def _on_job_event(self, event: JobEvent) -> None:
        tier = str(event.job_id).removeprefix(JOB_PREFIX)
        if tier not in self.config.tiers:
            return
        if event.code == EVENT_JOB_ERROR:
            log.error("job_failed", tier=tier, error=repr(getattr(event, "exception", None)))
            return
        slot = getattr(event, "scheduled_run_time", None) or datetime.now(timezone.utc)
        slot = slot.astimezone(timezone.utc)
        if event.code == EVENT_JOB_MISSED:
            self.record_missed(tier, slot)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._record_final(
                tier,
                slot,
                Outcome.SKIPPED_OVERLAP,
                "previous run of this tier still running (max_instances)",
            )

    def record_missed(self, tier: str, slot: datetime) -> int | None:
        run_id = self._record_final(
            tier,
            slot,
            Outcome.MISSED,
            f"slot {slot.isoformat()} was not run (daemon down past the misfire grace)",
        )
        if run_id is not None:
            self.dispatcher.emit(SlotMissed(run_id, tier, slot))
        return run_id

    def _record_final(self, tier: str, slot: datetime, outcome: Outcome, reason: str) -> int | None:
        now = datetime.now(timezone.utc)
        run_id = self.store.create_run(
            tier=tier,
            kind=self.config.tier(tier).kind,
            trigger="schedule",
            slot=slot,
            idempotency_key=f"{tier}@{slot.isoformat()}",
            outcome=outcome,
            reason=reason,
            host=self.dispatcher.host,
            owner_pid=os.getpid(),
            started_at=now,
            finished_at=now,
            duration_s=0.0,
        )
        if run_id is not None:
            log.warning("slot_not_run", tier=tier, slot=slot.isoformat(), outcome=outcome.value)
            record = self.store.get_run(run_id)
            self.dispatcher.emit(
                RunFinished(run_id, tier, "schedule", outcome, 0.0, {}, now, record)
            )
        return run_id


def wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until SIGTERM/SIGINT set ``stop``."""
    import signal

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(1.0):
            pass
