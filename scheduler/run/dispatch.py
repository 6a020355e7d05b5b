"""The dispatcher: a request becomes a recorded run, and a recorded run reaches its outcome.

record -> source -> GPUs -> tier kind (runner) -> :func:`~scheduler.kernel.outcome.decide` ->
:class:`~scheduler.run.ledger.RunLedger`. The dispatcher decides overlap (one active run per tier)
and hands out cancel events; outcomes come from the kernel and rows are written by the ledger.
Side effects beyond the store (metrics, alerts, progress) are listeners on :attr:`events`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from runners.base import StopRequest, request_stop
from runners.registry import RunnerFactory, instance_of
from scheduler.config import Config, TierConfig
from scheduler.history.quarantine import active_quarantines
from scheduler.images.catalog import image_ref, resolve_image
from scheduler.kernel.errors import (
    GpuError,
    InfraError,
    SchedctlError,
    SourceError,
    UnknownRefError,
    UsageError,
)
from scheduler.kernel.events import EventBus, Listener, RunQueued, RunStarted
from scheduler.kernel.outcome import Decision, Outcome, Stop, Termination, decide
from scheduler.run.kinds import RunContext, kind_for
from scheduler.run.ledger import RunLedger, RunRow, slot_key
from scheduler.run.protocols import CheckoutLike, GpuPoolLike, LeaseLike, SourceLike
from scheduler.run.recovery import owner_alive, process_identity, recover_runs
from scheduler.run.rundirs import create_run_dir
from scheduler.store.base import ActiveRunExists

if TYPE_CHECKING:
    from scheduler.run.protocols import RunStore
    from scheduler.store.records import RunRecord

log = structlog.get_logger("schedctl.dispatch")


@dataclass(frozen=True)
class RunRequest:
    """A wish to run a tier, from a cron slot, the CLI or the API."""

    tier: str
    trigger: str = "manual"
    ref: str | None = None
    markers: str | None = None
    timeout_s: float | None = None
    runner: str | None = None
    slot: datetime | None = None
    fire_lag_s: float | None = None

    @property
    def idempotency_key(self) -> str | None:
        return slot_key(self.tier, self.slot)


@dataclass
class _Active:
    run_id: int
    tier: str
    cancel: threading.Event = field(default_factory=StopRequest)
    cancel_reason: str = ""
    preempted_by: str = ""


class Dispatcher:
    """Runs tiers, one run per tier at a time, recording every run (and every skip)."""

    def __init__(
        self,
        config: Config,
        store: RunStore,
        runners: RunnerFactory,
        *,
        source: SourceLike | None = None,
        gpu_pool: GpuPoolLike | None = None,
        listeners: Iterable[Listener] = (),
        host: str | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.config = config
        self.store = store
        self.runners = runners
        self.source = source
        self.gpu_pool = gpu_pool
        self.host = host or socket.gethostname()
        self.proc_root = proc_root
        self.identity = process_identity(os.getpid(), proc_root)
        self.events = EventBus(listeners)
        self.ledger = RunLedger(store, self.events)
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._active: dict[int, _Active] = {}
        self._accepting = True
        if gpu_pool is not None:
            gpu_pool.set_preempter(self.preempt)
            gpu_pool.set_notify(self.events.emit)

    def add_listener(self, listener: Listener) -> None:
        self.events.subscribe(listener)

    # -- public API ----------------------------------------------------------------------------

    def validate(self, request: RunRequest) -> None:
        """Raise a UsageError for bad input before anything is recorded (tier, timeout, ref)."""
        self.config.tier(request.tier)
        if request.timeout_s is not None and not request.timeout_s > 0:
            raise UsageError(
                f"timeout must be a positive number of seconds, got {request.timeout_s}"
            )
        if request.ref is not None and self.source is not None:
            try:
                self.source.resolve(request.ref)
            except SourceError:
                # Unreachable or never fetched: recorded as infra-error by the run itself.
                log.warning("ref_not_validated", ref=request.ref, tier=request.tier)

    def run(
        self,
        request: RunRequest,
        cancel: threading.Event | None = None,
        *,
        recover: bool | None = None,
        actives: Sequence[RunRecord] | None = None,
        optimistic: bool = False,
    ) -> RunRecord:
        """Record and execute a run in the calling thread; returns the final record.

        Crash recovery (:meth:`recover`) runs first when ``recover`` is true; by default
        (``None``) only when the store holds a stale active row -- one whose owner died -- the
        only trace a crash can leave (a run's row is written before anything is started). The
        daemon also recovers at start-up and on a timer, so a fire never pays for it otherwise.
        ``actives``: the store's active runs, when the caller has just read them (a fire does,
        with its last slot: :meth:`~scheduler.store.Store.fire_reads`).

        ``optimistic`` (a cron fire of a daemon on its own SQLite store): the active runs are not
        read first; the row is inserted and the store's unique index on active runs per tier
        decides. Only when it refuses are the tier's active runs read: a stale one (a crash's
        leftover) is recovered and the insert tried again, a live one makes the run an overlap
        skip -- what a fire that read them first would have found. Stale rows of other tiers
        are left to the recovery timer and to those tiers' own fires.
        """
        self.validate(request)
        if optimistic:
            actives = ()  # none assumed: judged by the insert (see record's recover_stale)
        elif actives is None:
            actives = self.store.active_runs()
        if recover or (recover is None and not optimistic and self.stale_runs(actives)):
            self.recover({request.runner} if request.runner else set())
            actives = () if optimistic else self.store.active_runs()
        run_id = self.record(request, actives, recover_stale=optimistic)
        if run_id is None:
            existing = self.store.get_run_by_key(request.idempotency_key or "")
            assert existing is not None
            return existing
        return self.execute(run_id, request, cancel)

    def record(
        self,
        request: RunRequest,
        actives: Sequence[RunRecord] | None = None,
        *,
        recover_stale: bool = False,
    ) -> int | None:
        """Write the run row and return its id; ``None`` if the slot already has a row.

        When the tier is busy the row is written as a final ``skipped-overlap`` run, so every
        skip is visible; :meth:`execute` returns such a row as it is. ``actives`` is the store's
        active runs when the caller has just read them (saves a query; the store's unique index
        on active runs per tier still decides a race). ``recover_stale``: when that index
        refuses the row because of a stale active row of the tier, recover and insert again.
        """
        row = self._row(request)
        run_id: int | None = None
        # The busy check, the insert and the registration are one step: two fires of a tier at
        # the same moment must not both see it idle. Across processes the store's unique index
        # on active runs per tier decides.
        with self._record_lock:
            busy_reason = self._busy_reason(request.tier, actives)
            if not busy_reason:
                try:
                    run_id = self._open(row, request, recover_stale)
                except ActiveRunExists:
                    busy_reason = self._busy_reason(request.tier) or (
                        f"tier {request.tier!r} already has an active run in {self.store.location}"
                    )
                else:
                    if run_id is None:
                        log.info("slot_already_recorded", key=request.idempotency_key)
                        return None
                    with self._lock:
                        self._active[run_id] = _Active(run_id, request.tier)
        if busy_reason:
            skipped = self.ledger.open_final(row, decide(Stop.OVERLAP, busy_reason))
            return skipped.id if skipped is not None else None
        assert run_id is not None
        run_dir = self._run_dir(request, run_id)
        self.events.emit(RunQueued(run_id, request.tier, request.trigger, run_dir))
        return run_id

    def _open(self, row: RunRow, request: RunRequest, recover_stale: bool) -> int | None:
        """Insert the queued row (see :meth:`RunLedger.open`); with ``recover_stale``, a refusal
        by a stale active row of the tier recovers it and tries once more."""
        try:
            return self.ledger.open(row, lambda new: self._run_dir(request, new))
        except ActiveRunExists:
            if not (recover_stale and self.stale_runs(self.store.active_runs(request.tier))):
                raise
        log.info("stale_row_recovered_before_fire", tier=request.tier)
        self.recover({request.runner} if request.runner else set())
        return self.ledger.open(row, lambda new: self._run_dir(request, new))

    def execute(
        self, run_id: int, request: RunRequest, cancel: threading.Event | None = None
    ) -> RunRecord:
        """Carry a recorded run to its final outcome; never raises for a run that went wrong.

        ``cancel`` (a caller's event) becomes the run's own cancel event: setting it, or
        :meth:`cancel`, stops the run. Pass a :class:`StopRequest` so that a preemption can
        collect the run's stacks before the stop (a plain event is stopped without them).
        """
        with self._lock:
            # Recorded active by this dispatcher and not yet executed: no need to read it back.
            fresh = run_id in self._active
        if not fresh:
            existing = self.store.get_run(run_id)
            if existing.outcome.is_final:
                return existing
        with self._lock:
            active = self._active.setdefault(run_id, _Active(run_id, request.tier))
            if cancel is not None:
                if active.cancel.is_set():
                    cancel.set()
                active.cancel = cancel
        try:
            record = self._execute(run_id, request, active.cancel)
        except BaseException as exc:
            # A crash in our own code still leaves a final record naming it.
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.exception("run_crashed", run_id=run_id)
            record = self.ledger.finish(run_id, decide(Stop.CRASHED, f"schedctl crashed: {detail}"))
            if not isinstance(exc, Exception):
                raise
            return record
        finally:
            with self._lock:
                self._active.pop(run_id, None)
        if record.outcome is Outcome.PREEMPTED:
            self._requeue(record, request)
            return self.store.get_run(run_id)
        return record

    def preempt(self, run_id: int, reason: str) -> bool:
        """Stop an active run to free its GPUs: it ends ``preempted`` and runs again after."""
        with self._lock:
            active = self._active.get(run_id)
        if active is None:
            return False
        active.preempted_by = reason
        active.cancel_reason = reason
        request_stop(active.cancel, evidence=True)  # stacks first, then SIGTERM, grace, kill
        return True

    def cancel(self, run_id: int, reason: str = "cancelled by request") -> bool:
        with self._lock:
            active = self._active.get(run_id)
        if active is None:
            return False
        active.cancel_reason = reason
        active.cancel.set()
        return True

    def active_run_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._active)

    def stop_accepting(self) -> None:
        self._accepting = False

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            actives = list(self._active.values())
        for active in actives:
            active.cancel_reason = reason
            active.cancel.set()

    def recover(self, also_runners: set[str] | None = None) -> list[int]:
        """Interrupt runs whose owner died and reap what they left (see :mod:`.recovery`).

        ``also_runners`` names backends to reap beyond the configured ones.
        """
        return recover_runs(
            self.store,
            self.runners,
            self.ledger,
            host=self.host,
            runner_names=self._configured_runners() | (also_runners or set()),
            proc_root=self.proc_root,
        )

    def warm_up(self) -> None:
        """Pay at start-up what a fire would otherwise pay on its first run: the configured
        tiers' kind modules are imported and the store's reads on the way to ``RunStarted``
        are compiled (the daemon calls this before its first slot)."""
        for tier in self.config.tiers.values():
            kind_for(tier.kind)
        self.store.active_runs()
        self.store.quarantine_list()
        first = next(iter(self.config.tiers), None)
        if first is not None:  # one rehearsal serves every tier: the statements are the same
            self.ledger.rehearse(self._row(RunRequest(tier=first, trigger="schedule")))

    def stale_runs(self, actives: Sequence[RunRecord] | None = None) -> list[int]:
        """Active rows of this host whose owner process is gone (what :meth:`recover` ends).

        Rows of other hosts are not judged here: their owners cannot be checked from this one.
        """
        if actives is None:
            actives = self.store.active_runs()
        with self._lock:
            mine = set(self._active)
        return [
            record.id
            for record in actives
            if record.id not in mine
            and record.host in (None, self.host)
            and not (record.host == self.host and owner_alive(record, self.proc_root))
        ]

    # -- internals -----------------------------------------------------------------------------

    def _row(self, request: RunRequest) -> RunRow:
        tier = self.config.tier(request.tier)
        return RunRow(
            tier=request.tier,
            kind=tier.kind,
            trigger=request.trigger,
            host=self.host,
            owner_pid=os.getpid(),
            owner_identity=self.identity,
            slot=request.slot,
            ref=request.ref,
            markers=request.markers if request.markers is not None else tier.markers,
        )

    def _run_dir(self, request: RunRequest, run_id: int) -> Path:
        """Where the run's files go: Slurm runs under ``slurm.shared_dir`` (the compute nodes
        write there), per daemon instance; every other run under the state dir."""
        shared = self.config.slurm.shared_dir
        if shared is not None and self.config.runner_for(request.tier, request.runner) == "slurm":
            return shared / instance_of(self.config.state_dir) / str(run_id)
        return self.config.runs_dir / str(run_id)

    def _configured_runners(self) -> set[str]:
        return {self.config.runner} | {self.config.runner_for(t) for t in self.config.tiers}

    def _busy_reason(self, tier: str, actives: Sequence[RunRecord] | None = None) -> str:
        if not self._accepting:
            return "daemon is shutting down"
        busy = self._busy_run(tier, actives)
        return f"tier {tier!r} is already running as run {busy}" if busy is not None else ""

    def _busy_run(self, tier: str, actives: Sequence[RunRecord] | None = None) -> int | None:
        with self._lock:
            for active in self._active.values():
                if active.tier == tier:
                    return active.run_id
        if actives is None:
            actives = self.store.active_runs(tier)
        for record in actives:
            if (
                record.tier == tier
                and record.host == self.host
                and owner_alive(record, self.proc_root)
            ):
                return record.id
        return None

    def _execute(self, run_id: int, request: RunRequest, cancel: threading.Event) -> RunRecord:
        tier = self.config.tier(request.tier)
        run_dir = self._run_dir(request, run_id)
        try:
            create_run_dir(run_dir)
        except FileExistsError:
            why = f"run directory {run_dir} already exists: a run never writes into an old one"
            return self.ledger.finish(run_id, decide(Stop.NEVER_STARTED, why))
        checkout: CheckoutLike | None = None
        lease: LeaseLike | None = None
        low = self._state_disk_low()
        if low:
            log.error("state_disk_low", run_id=run_id, detail=low)
            return self.ledger.finish(run_id, decide(Stop.NEVER_STARTED, low))
        try:
            try:
                workdir, checkout = self._checkout(request, run_id)
            except (SourceError, UnknownRefError) as exc:
                # A ref that validated but vanished upstream before the checkout is no test result.
                return self.ledger.finish(run_id, decide(Stop.NEVER_STARTED, str(exc)))
            try:
                runner = self.runners.get(self.config.runner_for(request.tier, request.runner))
            except InfraError as exc:
                return self.ledger.finish(run_id, decide(Stop.NEVER_STARTED, str(exc)))
            try:
                tier, pinned = self._pinned_image(tier, runner.in_container)
            except InfraError as exc:
                return self.ledger.finish(run_id, decide(Stop.NEVER_STARTED, str(exc)))
            # A runner whose scheduler leases GPUs itself (Slurm) gets none from the NVML pool.
            leased = None if runner.leases_gpus else self._lease(run_id, request.tier, tier, cancel)
            if isinstance(leased, Decision):
                return self.ledger.finish(run_id, leased)
            lease = leased
            context = RunContext(
                config=self.config, tier_name=request.tier, tier=tier, run_id=run_id,
                runner=runner, workdir=workdir, run_dir=run_dir,
                devices=tuple(lease.devices) if lease is not None else (), host=self.host,
                markers=request.markers, timeout_s=request.timeout_s,
                gpu_snapshot=self._gpu_snapshot(lease),
                quarantine=self._quarantined,
            )  # fmt: skip
            prepared = kind_for(tier.kind).prepare(context)
            self.ledger.mark_running(run_id, **prepared.provenance)
            log.info("run_started", run_id=run_id, tier=request.tier, kind=tier.kind)
            self.events.emit(
                RunStarted(
                    run_id, request.tier, request.trigger, run_dir,
                    lease.waited_s if lease is not None else 0.0, request.fire_lag_s,
                )
            )  # fmt: skip
            finished = prepared.execute(cancel)
            cancelled = finished.ending.termination is Termination.CANCELLED
            decision = decide(finished.ending, self._cancel_reason(run_id) if cancelled else "")
            preempted_by = self._preempted_by(run_id)
            if cancelled and preempted_by:
                decision = decide(Stop.PREEMPTED, preempted_by)
            leaks = self._leak_check(lease)
            details = {**finished.evidence.details, **leaks, **pinned}
            evidence = replace(finished.evidence, details=details)
            return self.ledger.finish(run_id, decision, evidence)
        finally:
            if lease is not None and self.gpu_pool is not None:
                self.gpu_pool.release(run_id)
            if checkout is not None and self.source is not None:
                final = self.store.get_run(run_id).outcome
                keep = final not in (Outcome.PASSED, Outcome.SKIPPED_OVERLAP)
                try:
                    self.source.release(checkout, keep=keep)
                except SchedctlError:
                    log.warning("worktree_release_failed", run_id=run_id, tier=request.tier)

    def _quarantined(self) -> frozenset[str]:
        return active_quarantines(self.store.quarantine_list(), self.ledger.clock())

    def _pinned_image(
        self, tier: TierConfig, in_container: bool
    ) -> tuple[TierConfig, dict[str, Any]]:
        """The tier with ``image: "@recipe"`` replaced by the recipe's newest good build's id."""
        recipe = image_ref(self.config, tier) if in_container else None
        if recipe is None:
            return tier, {}
        resolved = resolve_image(self.store.full_store(), recipe)
        if resolved.note:
            log.warning("image_build_not_latest", recipe=recipe, note=resolved.note)
        pinned = tier.model_copy(update={"image": resolved.build.image_id})
        return pinned, {"image_build": resolved.details()}

    def _state_disk_low(self) -> str:
        """Why the state filesystem is too full to start a run (``state_min_free``), or ``""``."""
        try:
            free = shutil.disk_usage(self.config.state_dir).free
        except OSError as exc:
            return f"cannot measure free space on {self.config.state_dir}: {exc.strerror}"
        if free >= self.config.state_min_free:
            return ""
        return (
            f"state filesystem of {self.config.state_dir} has {free} bytes free, below "
            f"state_min_free ({self.config.state_min_free}): run refused so the database stays "
            "writable"
        )

    def _lease(
        self, run_id: int, tier_name: str, tier: TierConfig, cancel: threading.Event
    ) -> LeaseLike | Decision | None:
        """The GPUs the tier needs (``None``: it needs none), or why the run cannot have them."""
        if not tier.gpus:
            return None
        if self.gpu_pool is None:
            return decide(Stop.GPU_UNAVAILABLE, "no GPU pool: NVML is not configured")
        try:
            lease = self.gpu_pool.acquire(
                run_id,
                tier_name,
                tier.gpus,
                self.config.tier_priority(tier_name),
                self.config.gpu.wait,
                cancel,
                preempts=tier.preempts,
            )
        except GpuError as exc:
            return decide(Stop.GPU_UNAVAILABLE, str(exc))
        except SchedctlError as exc:  # GpuWaitCancelled: a cancel is no GPU problem
            return decide(Stop.CANCELLED, self._cancel_reason(run_id) or str(exc) or "cancelled")
        if cancel.is_set():
            self.gpu_pool.release(run_id)
            return decide(Stop.CANCELLED, self._cancel_reason(run_id) or "cancelled while waiting")
        self.store.update_run(run_id, **lease.provenance())
        return lease

    def _gpu_snapshot(self, lease: LeaseLike | None) -> Callable[[], dict[str, Any]] | None:
        pool = self.gpu_pool
        if lease is None or not lease.devices or pool is None:
            return None
        uuids = [d.uuid for d in lease.devices]
        return lambda: pool.evidence(uuids)

    def _preempted_by(self, run_id: int) -> str:
        with self._lock:
            active = self._active.get(run_id)
        return active.preempted_by if active else ""

    def _requeue(self, preempted: RunRecord, request: RunRequest) -> None:
        """Run a preempted run again, as a new row linked to it; it waits behind its preempter
        for the GPUs (the pool serves a preempting waiter first)."""
        again = replace(request, trigger="requeue", slot=None, fire_lag_s=None)
        new_id = self.record(again)
        if new_id is None:
            return
        self.store.update_run(preempted.id, details={**preempted.details, "requeued_as": new_id})
        self.store.update_run(new_id, details={"requeue_of": preempted.id})
        log.info("run_requeued", run_id=new_id, preempted=preempted.id, tier=request.tier)
        self.execute(new_id, again)

    def _cancel_reason(self, run_id: int) -> str:
        with self._lock:
            active = self._active.get(run_id)
        return active.cancel_reason if active else ""

    def _checkout(self, request: RunRequest, run_id: int) -> tuple[Path, CheckoutLike | None]:
        if self.source is None:
            path = self.config.project.path
            if path is None:
                raise SourceError("project.repo needs the git source; none configured")
            return path, None
        checkout = self.source.checkout(request.ref, str(run_id))
        updates: dict[str, Any] = {"sha": checkout.sha, "source": checkout.provenance()}
        if request.ref is None:
            updates["ref"] = checkout.ref
        self.store.update_run(run_id, **updates)
        return Path(checkout.path), checkout

    def _leak_check(self, lease: LeaseLike | None) -> dict[str, Any]:
        """GPU processes left on the leased GPUs after the run.

        Those a runner says are the run's own (:meth:`Runner.owns`: the run's tag in their
        environment -- pytest and torchrun ranks alike -- or one of its containers in their
        cgroup) leaked and keep memory from the next run; the others are foreign processes that
        took a leased GPU while the run held it. Both are recorded, apart.
        """
        if lease is None or not lease.devices or self.gpu_pool is None:
            return {}
        try:
            found = self.gpu_pool.leaked_processes(lease)
        except GpuError as exc:
            return {"leak_check_error": str(exc)}
        ours = [p for p in found if self.runners.owns(p.pid, str(lease.run_id))]
        foreign = [p for p in found if p not in ours]
        if ours:
            log.warning("gpu_process_leaked", run_id=lease.run_id, pids=[p.pid for p in ours])
        if foreign:
            log.warning("gpu_foreign_process", run_id=lease.run_id, pids=[p.pid for p in foreign])
        return {
            "leaked_gpu_processes": [p.to_json() for p in ours],
            "foreign_gpu_processes": [p.to_json() for p in foreign],
        }
