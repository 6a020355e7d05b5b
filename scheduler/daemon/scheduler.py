"""The daemon: APScheduler fires tiers on their cron schedules and hands them to the dispatcher.

This is the only module that talks to APScheduler. Its jobs live in memory, rebuilt from the
config (the source of truth) at every start; what a restart must know -- which slots came due
while the daemon was down -- comes from the store's recorded slots: at start-up each tier's
latest due slot after its last recorded one is fired once, and slot planning (``slots.py``)
runs it within ``misfire_grace`` (newest ``max_catchup``) or records it and the gap as missed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.config import Config, TierConfig
from scheduler.daemon.cron import latest_slot, parse_cron, slots_between
from scheduler.daemon.lock import StateLock
from scheduler.daemon.slots import MAX_GAP_ROWS, SlotPlan, plan_slots
from scheduler.kernel.errors import DaemonError, SchedctlError
from scheduler.kernel.events import SlotMissed
from scheduler.kernel.heap import freeze_heap
from scheduler.kernel.outcome import Stop, decide
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.run.ledger import RunRow
from scheduler.store.engine import Store

log = structlog.get_logger("schedctl.daemon")

JOB_PREFIX = "tier:"
CATCHUP_PREFIX = "catch-up:"

RECOVERY_INTERVAL_S = 60.0
"""Crash recovery runs at start-up, then on this timer (and before a fire that finds a stale
active row), never on every fire: reaping asks every runner's engine, which costs tens of ms."""


CHECKPOINT_INTERVAL_S = 30.0
"""How often the daemon copies the SQLite WAL back into the database file: inserts never do it
(it cost a run's results insert ~250 ms on a large store), so the WAL starts over at least this
often instead of growing."""

TriggerFactory = Callable[[TierConfig, tzinfo], Any]


def cron_trigger(tier: TierConfig, tz: tzinfo) -> Any:
    """The production trigger: the tier's 5-field cron in the configured timezone."""
    assert tier.schedule is not None
    return parse_cron(tier.schedule, tz)


class _SlotJob:
    """What APScheduler's ``run_job`` reads of a job, with the slot it fires for added.

    APScheduler knows the scheduled time of each run but does not pass it to the job; with it
    the fire needs no search for "the latest slot before now".
    """

    def __init__(self, job: Any, run_time: datetime) -> None:
        self.id = job.id
        self.name = job.name
        self.func = job.func
        self.args = job.args
        self.kwargs = {**job.kwargs, "slot": run_time, "trigger": job.trigger}
        self.misfire_grace_time = job.misfire_grace_time
        self._jobstore_alias = job._jobstore_alias

    def __str__(self) -> str:
        return str(self.name)


class SlotExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """A thread pool that hands each tier job the slot time it was scheduled for."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        if len(run_times) == 1 and str(job.id).startswith(JOB_PREFIX):
            job = _SlotJob(job, run_times[0])
        super()._do_submit_job(job, run_times)


class Service(Protocol):
    """Something that lives as long as the daemon: metrics server, control API, alert worker."""

    name: str

    def start(self, daemon: Daemon) -> None: ...

    def stop(self) -> None: ...


class Daemon:
    """Owns the APScheduler instance and the lifecycle boot -> start -> stop.

    Services start after the scheduler and stop after the last run has been recorded, so the
    metrics endpoint and the alert worker see the shutdown's own outcomes. ``trigger_for`` builds
    each tier's trigger; tests and the restart bench inject a seconds-level one, production uses
    the tier's cron. ``freeze_heap`` (``schedctl daemon`` sets it) takes the heap built by
    the start-up out of the garbage collector's full passes (see :func:`freeze_heap`).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        dispatcher: Dispatcher,
        services: Sequence[Service] = (),
        *,
        trigger_for: TriggerFactory = cron_trigger,
        recovery_interval_s: float = RECOVERY_INTERVAL_S,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        freeze_heap: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.services = list(services)
        self.tz = ZoneInfo(config.timezone)
        self.key = str(config.state_dir.resolve())
        self.lock = StateLock(config.state_dir)
        self.scheduler: Any = None
        self.started = threading.Event()
        self.started_at: datetime | None = None
        self.trigger_for = trigger_for
        self._started_services: list[Service] = []
        self.recovery_interval_s = recovery_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self._timers_stop = threading.Event()
        self._timers: list[threading.Thread] = []
        self.freeze_heap = freeze_heap
        self._frozen = False
        self._last_slots: dict[str, datetime | None] = {}
        self._last_slots_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.lock.acquire()
        try:
            self.started_at = datetime.now(timezone.utc)
            with self._last_slots_lock:
                self._last_slots.clear()
            self.dispatcher.recover()
            self.dispatcher.warm_up()
            self.scheduler = BackgroundScheduler(
                executors={"default": SlotExecutor(max(4, len(self.config.tiers) + 2))},
                job_defaults={"coalesce": True, "max_instances": 1},
                timezone=self.tz,
            )
            self.scheduler.add_listener(
                self._on_job_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
            )
            self.scheduler.start(paused=True)
            self._sync_jobs()
            self._catch_up(self.started_at)
            for service in self.services:
                service.start(self)
                self._started_services.append(service)
            if self.freeze_heap:
                freeze_heap()  # before the first slot: start-up's objects are all made
                self._frozen = True
            self.scheduler.resume()
            self._start_timers()
        except BaseException:
            self._unfreeze()
            self._stop_services()
            if self.scheduler is not None and self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            self.lock.release()
            raise
        self.started.set()
        log.info(
            "daemon_started",
            tiers=list(self.config.tiers),
            state_dir=str(self.config.state_dir),
            pid=os.getpid(),
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Stop firing, let running runs finish up to the grace, then cancel and record them."""
        grace = self.config.daemon.grace if grace_s is None else grace_s
        log.info("daemon_stopping", grace_s=grace, active=self.dispatcher.active_run_ids())
        self.dispatcher.stop_accepting()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._stop_timers()
        deadline = datetime.now(timezone.utc) + timedelta(seconds=grace)
        while self.dispatcher.active_run_ids() and datetime.now(timezone.utc) < deadline:
            threading.Event().wait(0.2)
        if self.dispatcher.active_run_ids():
            self.dispatcher.cancel_all("daemon stopped: grace period ran out")
            deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
            while self.dispatcher.active_run_ids() and datetime.now(timezone.utc) < deadline:
                threading.Event().wait(0.1)
        self._stop_services()
        self.lock.release()
        self.started.clear()
        self._unfreeze()
        log.info("daemon_stopped")

    def _unfreeze(self) -> None:
        """Hand the frozen objects back to the collector (a process that goes on after the
        daemon -- a test session -- gets its garbage collected again)."""
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def _start_timers(self) -> None:
        """Crash recovery and the WAL checkpoint, each on its own timer thread."""
        self._timers_stop.clear()
        timers = (
            ("recovery", self.recovery_interval_s, self.dispatcher.recover),
            ("checkpoint", self.checkpoint_interval_s, self._checkpoint),
        )
        for name, interval, work in timers:
            thread = threading.Thread(
                target=self._every, args=(interval, work, name), name=name, daemon=True
            )
            thread.start()
            self._timers.append(thread)

    def _every(self, interval_s: float, work: Callable[[], object], name: str) -> None:
        while not self._timers_stop.wait(interval_s):
            try:
                work()
            except Exception:
                log.exception(f"{name}_failed")

    def _stop_timers(self) -> None:
        self._timers_stop.set()
        while self._timers:
            self._timers.pop().join(timeout=30)

    def _checkpoint(self) -> None:
        # Finished runs' staged results into test_results (scheduler/store/staging.py), off
        # any user's path; then the WAL, merge included, into the file.
        try:
            self.store.merge_staged()
        except SchedctlError as exc:  # staged rows read the same; the next tick merges them
            log.warning("merge_staged_failed", error=str(exc))
        done = self.store.checkpoint()
        if done is not None and done[1] < done[0]:
            # A reader still needs older pages; the next tick copies the rest.
            log.debug("checkpoint_partial", wal_frames=done[0], copied=done[1])

    def _stop_services(self) -> None:
        while self._started_services:
            service = self._started_services.pop()
            try:
                service.stop()
            except Exception:
                log.exception("service_stop_failed", service=service.name)

    @property
    def running(self) -> bool:
        return bool(self.started.is_set() and self.scheduler is not None and self.scheduler.running)

    def healthy(self) -> bool:
        """The scheduler thread is alive and the store accepts a write (for the watchdog)."""
        thread = getattr(self.scheduler, "_thread", None)
        if not self.running or thread is None or not thread.is_alive():
            return False
        try:
            self._heartbeat()
        except Exception as exc:
            log.error("store_not_writable", error=str(exc))
            return False
        return True

    def _heartbeat(self) -> None:
        self.store.heartbeat()

    # -- manual runs -----------------------------------------------------------------------------

    def submit(self, request: RunRequest) -> int:
        """Validate and record a run, execute it in its own thread, and return its id at once.

        Raises:
            UsageError: unknown tier or ref (nothing is recorded).
            DaemonError: the daemon is stopping.
        """
        if not self.started.is_set():
            raise DaemonError("the daemon is not running or is shutting down")
        self.dispatcher.validate(request)
        run_id = self.dispatcher.record(request)
        if run_id is None:
            existing = self.store.get_run_by_key(request.idempotency_key or "")
            assert existing is not None
            return existing.id
        if not self.store.get_run(run_id).outcome.is_final:
            threading.Thread(
                target=self.dispatcher.execute,
                args=(run_id, request),
                name=f"run-{run_id}",
                daemon=True,
            ).start()
        return run_id

    # -- scheduling ------------------------------------------------------------------------------

    def _trigger(self, tier: str) -> Any:
        return self.trigger_for(self.config.tier(tier), self.tz)

    def _sync_jobs(self) -> None:
        for name, tier in self.config.tiers.items():
            # tiers.<t>.hosts pins a tier to some daemons of a shared store
            if not (tier.schedule and tier.enabled and self.config.fires_here(name)):
                continue
            self.scheduler.add_job(
                self.fire,
                trigger=self.trigger_for(tier, self.tz),
                args=(name,),
                id=JOB_PREFIX + name,
                name=JOB_PREFIX + name,
                replace_existing=True,
                misfire_grace_time=int(tier.misfire_grace),
            )

    def _catch_up(self, now: datetime) -> None:
        """Fire, once, each tier's latest slot that came due after its last recorded one.

        What a persistent job store did at a restart: :meth:`plan` runs that slot within the
        misfire grace (with up to ``max_catchup`` of the backlog) and records the rest missed.
        """
        for name, tier in self.config.tiers.items():
            if not (tier.schedule and tier.enabled and self.config.fires_here(name)):
                continue
            last = self.store.last_slot(name)
            self._know_slot(name, last)
            if last is None:
                continue
            trigger = self.trigger_for(tier, self.tz)
            due = slots_between(trigger, last, now)
            if not due:
                continue
            self.scheduler.add_job(
                self.fire,
                trigger="date",
                run_date=now,
                args=(name,),
                kwargs={"slot": due[-1], "trigger": trigger},
                id=CATCHUP_PREFIX + name,
                name=CATCHUP_PREFIX + name,
                misfire_grace_time=None,
            )

    def next_fire_times(self) -> dict[str, datetime | None]:
        out: dict[str, datetime | None] = {}
        for name in self.config.tiers:
            job = self.scheduler.get_job(JOB_PREFIX + name) if self.scheduler else None
            out[name] = job.next_run_time if job is not None else None
        return out

    def fire(self, tier: str, slot: datetime | None = None, trigger: Any = None) -> None:
        """Run ``slot`` of ``tier`` (called in an APScheduler worker thread).

        ``slot`` is the scheduled time APScheduler hands the job and ``trigger`` the job's; a
        direct call without them looks the job up and searches for the latest slot before now.
        """
        now = datetime.now(timezone.utc)
        tier_cfg = self.config.tier(tier)
        if trigger is None:
            job = self.scheduler.get_job(JOB_PREFIX + tier) if self.scheduler else None
            trigger = job.trigger if job is not None else self._trigger(tier)
        if slot is None:
            lookback = timedelta(seconds=tier_cfg.misfire_grace + 120)
            slot = latest_slot(trigger, now, lookback) or now.replace(second=0, microsecond=0)
        slot = slot.astimezone(timezone.utc)
        known, last = self._known_last_slot(tier)
        actives: list[Any] | None = None
        if not known:
            last, actives = self.store.fire_reads(tier)  # one read: last slot and active runs
        plan = self.plan(tier, trigger, slot, now, last=last)
        for missed in plan.missed:
            self.record_missed(tier, missed)
        for i, due in enumerate(plan.run):
            lag = (datetime.now(timezone.utc) - due).total_seconds()
            log.info("tier_fired", tier=tier, slot=due.isoformat(), fire_lag_s=round(lag, 4))
            request = RunRequest(tier=tier, trigger="schedule", slot=due, fire_lag_s=lag)
            self._know_slot(tier, due)  # recorded below, or already recorded
            try:
                if known:
                    # Nothing read before the insert: the store's unique index decides overlap.
                    self.dispatcher.run(request, optimistic=True)
                else:
                    # a later slot of a catch-up is read afresh: the run before changed the store
                    self.dispatcher.run(request, actives=actives if i == 0 else None)
            except BaseException:
                self._forget_slots(tier)  # maybe not recorded: the next fire reads the store
                raise

    def _known_last_slot(self, tier: str) -> tuple[bool, datetime | None]:
        """The tier's last recorded slot as this daemon knows it, without a read.

        Only this daemon writes slot rows of its own SQLite store (the state dir's lock keeps
        out a second one): once it has read a tier's last slot (start-up) it follows every
        slot it records itself. On a shared (PostgreSQL) store other daemons record slots too,
        so each fire reads.
        """
        if self.config.store.is_postgres:
            return False, None
        with self._last_slots_lock:
            if tier not in self._last_slots:
                return False, None
            return True, self._last_slots[tier]

    def _forget_slots(self, tier: str) -> None:
        with self._last_slots_lock:
            self._last_slots.pop(tier, None)

    def _know_slot(self, tier: str, slot: datetime | None) -> None:
        """Note that ``slot`` of ``tier`` is recorded (``None``: the tier has no slot rows)."""
        with self._last_slots_lock:
            if tier not in self._last_slots or slot is None:
                self._last_slots[tier] = slot
                return
            last = self._last_slots[tier]
            if last is None or slot > last:
                self._last_slots[tier] = slot

    def plan(
        self,
        tier: str,
        trigger: Any,
        slot: datetime,
        now: datetime,
        *,
        last: datetime | Literal["read"] | None = "read",
    ) -> SlotPlan:
        """Which slots up to ``slot`` run now and which are missed (see :func:`plan_slots`);
        ``last``: the tier's last recorded slot if the caller has read it."""
        tier_cfg = self.config.tier(tier)
        return plan_slots(
            trigger,
            slot,
            now,
            last=self.store.last_slot(tier) if last == "read" else last,
            started_at=self.started_at,
            misfire_grace_s=tier_cfg.misfire_grace,
            max_catchup=tier_cfg.max_catchup,
        )

    def _on_job_event(self, event: JobEvent) -> None:
        tier = str(event.job_id).removeprefix(JOB_PREFIX).removeprefix(CATCHUP_PREFIX)
        if tier not in self.config.tiers:
            return
        if event.code == EVENT_JOB_ERROR:
            log.error("job_failed", tier=tier, error=repr(getattr(event, "exception", None)))
            return
        if event.code == EVENT_JOB_MISSED:
            slot = event.scheduled_run_time.astimezone(timezone.utc)
            job = self.scheduler.get_job(event.job_id)
            if job is not None:
                self._account_gap(tier, job.trigger, slot)
            self.record_missed(tier, slot)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            # A submission event carries the list ``scheduled_run_times`` (no singular
            # attribute): the exact slots, so their keys match the ones a fire would use.
            for run_time in getattr(event, "scheduled_run_times", None) or []:
                self._record_final(
                    tier,
                    run_time.astimezone(timezone.utc),
                    Stop.OVERLAP,
                    "previous run of this tier still running (max_instances)",
                )

    def _account_gap(self, tier: str, trigger: Any, slot: datetime) -> None:
        """Record every slot between the tier's last recorded slot and ``slot`` as missed.

        APScheduler coalesces a backlog into its newest slot and reports only that one, so the
        slots before it would vanish silently without this.
        """
        last = self.store.last_slot(tier)
        if last is None or last >= slot:
            return
        gap = [s for s in slots_between(trigger, last, slot) if s < slot]
        for missed in gap[-MAX_GAP_ROWS:]:
            self.record_missed(tier, missed.astimezone(timezone.utc))

    def record_missed(self, tier: str, slot: datetime) -> int | None:
        run_id = self._record_final(
            tier,
            slot,
            Stop.MISSED,
            f"slot {slot.isoformat()} was not run (daemon down past the misfire grace "
            "or beyond the tier's max_catchup)",
        )
        if run_id is not None:
            self.dispatcher.events.emit(SlotMissed(run_id, tier, slot))
        return run_id

    def _record_final(self, tier: str, slot: datetime, stop: Stop, reason: str) -> int | None:
        row = RunRow(
            tier=tier,
            kind=self.config.tier(tier).kind,
            trigger="schedule",
            host=self.dispatcher.host,
            owner_pid=os.getpid(),
            owner_identity=self.dispatcher.identity,
            slot=slot,
        )
        record = self.dispatcher.ledger.open_final(row, decide(stop, reason))
        self._know_slot(tier, slot)
        return record.id if record is not None else None


def install_signal_handlers(stop: threading.Event) -> None:
    """Make SIGTERM/SIGINT set ``stop`` (install before a slow start-up, so none is lost)."""
    import signal

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until SIGTERM/SIGINT set ``stop``."""
    install_signal_handlers(stop)
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(1.0):
            pass
