"""The run lifecycle: record -> source -> GPUs -> runner -> results -> store -> events.

The dispatcher is the only code that turns a request into a run row and a run row into a final
outcome. Side effects beyond the store (metrics, alerts, progress) are listeners of its events.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from runners.base import RunResult
from runners.registry import RunnerFactory
from scheduler.config import Config, TierConfig
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import (
    GpuError,
    SchedctlError,
    SourceError,
    UnknownRefError,
    UsageError,
)
from scheduler.kernel.events import Event, Listener, RunFinished, RunQueued, RunStarted
from scheduler.kernel.outcome import Outcome
from scheduler.orphans import started_by_run
from scheduler.run.protocols import GpuPoolLike, SourceLike
from scheduler.run.recovery import owner_alive, process_identity, recover_runs
from scheduler.run.results import ParsedResults, classify, empty_counts, load_results
from scheduler.run.spec import base_env, build_pytest_spec
from scheduler.store.engine import ActiveRunExists, RunRecord, Store

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
        return f"{self.tier}@{self.slot.isoformat()}" if self.slot else None


@dataclass
class _Active:
    run_id: int
    tier: str
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""


class Dispatcher:
    """Runs tiers, one run per tier at a time, recording every run (and every skip)."""

    def __init__(
        self,
        config: Config,
        store: Store,
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
        self._listeners: list[Listener] = list(listeners)
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._active: dict[int, _Active] = {}
        self._accepting = True

    # -- events ------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception(
                    "listener_failed", listener=repr(listener), event_type=type(event).__name__
                )

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

    def run(self, request: RunRequest, cancel: threading.Event | None = None) -> RunRecord:
        """Record and execute a run in the calling thread; returns the final record."""
        self.validate(request)
        self.recover({request.runner} if request.runner else set())
        run_id = self.record(request)
        if run_id is None:
            existing = self.store.get_run_by_key(request.idempotency_key or "")
            assert existing is not None
            return existing
        return self.execute(run_id, request, cancel)

    def record(self, request: RunRequest) -> int | None:
        """Write the run row and return its id; ``None`` if the slot already has a row.

        When the tier is busy the row is written as a final ``skipped-overlap`` run, so every
        skip is visible; :meth:`execute` returns such a row as it is.
        """
        tier = self.config.tier(request.tier)
        base = {
            "tier": request.tier,
            "kind": tier.kind,
            "trigger": request.trigger,
            "slot": request.slot,
            "idempotency_key": request.idempotency_key,
            "ref": request.ref,
            "host": self.host,
            "owner_pid": os.getpid(),
            "owner_identity": self.identity,
            "markers": request.markers if request.markers is not None else tier.markers,
        }
        run_id: int | None = None
        # The busy check, the insert and the registration are one step: two fires of a tier at
        # the same moment must not both see it idle. Across processes the store's unique index
        # on active runs per tier decides.
        with self._record_lock:
            busy_reason = self._busy_reason(request.tier)
            if not busy_reason:
                try:
                    run_id = self.store.create_run(**base)
                except ActiveRunExists:
                    busy_reason = self._busy_reason(request.tier) or (
                        f"tier {request.tier!r} already has an active run in {self.store.path}"
                    )
                else:
                    if run_id is None:
                        log.info("slot_already_recorded", key=request.idempotency_key)
                        return None
                    with self._lock:
                        self._active[run_id] = _Active(run_id, request.tier)
        if busy_reason:
            now = utcnow()
            run_id = self.store.create_run(
                **base,
                outcome=Outcome.SKIPPED_OVERLAP,
                reason=busy_reason,
                finished_at=now,
                started_at=now,
                duration_s=0.0,
            )
            if run_id is not None:
                log.warning("run_skipped", run_id=run_id, tier=request.tier, reason=busy_reason)
                record = self.store.get_run(run_id)
                self.emit(
                    RunFinished(
                        run_id, request.tier, request.trigger, record.outcome, 0.0, {}, now, record
                    )
                )
            return run_id
        assert run_id is not None
        run_dir = self.config.runs_dir / str(run_id)
        self.store.update_run(run_id, run_dir=str(run_dir))
        self.emit(RunQueued(run_id, request.tier, request.trigger, run_dir))
        return run_id

    def execute(
        self, run_id: int, request: RunRequest, cancel: threading.Event | None = None
    ) -> RunRecord:
        """Carry a recorded run to its final outcome; never raises for a run that went wrong."""
        existing = self.store.get_run(run_id)
        if existing.outcome.is_final:
            return existing
        with self._lock:
            active = self._active.setdefault(run_id, _Active(run_id, request.tier))
        if cancel is not None:
            _chain(cancel, active.cancel)
        try:
            return self._execute(run_id, request, active.cancel)
        except BaseException as exc:
            # A crash in our own code still leaves a final record naming it.
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.exception("run_crashed", run_id=run_id)
            record = self.store.finish_run(
                run_id, outcome=Outcome.INFRA_ERROR, reason=f"schedctl crashed: {detail}"
            )
            self._finished(record)
            if not isinstance(exc, Exception):
                raise
            return record
        finally:
            with self._lock:
                self._active.pop(run_id, None)

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
            host=self.host,
            runs_dir=self.config.runs_dir,
            runner_names=self._configured_runners() | (also_runners or set()),
            on_finished=self._finished,
            proc_root=self.proc_root,
        )

    # -- internals -----------------------------------------------------------------------------

    def _configured_runners(self) -> set[str]:
        names: set[str] = {self.config.runner}
        names.update(t.runner for t in self.config.tiers.values() if t.runner)
        return names

    def _busy_reason(self, tier: str) -> str:
        if not self._accepting:
            return "daemon is shutting down"
        busy = self._busy_run(tier)
        return f"tier {tier!r} is already running as run {busy}" if busy is not None else ""

    def _busy_run(self, tier: str) -> int | None:
        with self._lock:
            for active in self._active.values():
                if active.tier == tier:
                    return active.run_id
        for record in self.store.active_runs(tier):
            if record.host == self.host and owner_alive(record, self.proc_root):
                return record.id
        return None

    def _execute(self, run_id: int, request: RunRequest, cancel: threading.Event) -> RunRecord:
        tier = self.config.tier(request.tier)
        run_dir = self.config.runs_dir / str(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        bind = {"run_id": run_id, "tier": request.tier}

        checkout: Any = None
        lease: Any = None
        updates: dict[str, Any] = {}
        try:
            try:
                workdir, checkout, source_updates = self._checkout(request, run_id)
            except (SourceError, UnknownRefError) as exc:
                # A ref that validated but vanished upstream before the checkout is no test result.
                return self._finish_early(run_id, Outcome.INFRA_ERROR, str(exc))
            updates.update(source_updates)
            self.store.update_run(run_id, **source_updates)

            gpu_wait_s = 0.0
            if tier.gpus:
                if self.gpu_pool is None:
                    return self._finish_early(
                        run_id, Outcome.GPU_UNAVAILABLE, "no GPU pool: NVML is not configured"
                    )
                try:
                    lease = self.gpu_pool.acquire(
                        run_id,
                        request.tier,
                        tier.gpus,
                        self.config.tier_priority(request.tier),
                        self.config.gpu.wait,
                        cancel,
                    )
                except GpuError as exc:
                    return self._finish_early(run_id, Outcome.GPU_UNAVAILABLE, str(exc))
                except SchedctlError as exc:  # GpuWaitCancelled: a cancel is no GPU problem
                    return self._finish_early(run_id, Outcome.CANCELLED, str(exc) or "cancelled")
                if cancel.is_set():
                    return self._finish_early(run_id, Outcome.CANCELLED, "cancelled while waiting")
                gpu_wait_s = float(lease.waited_s)
                gpu_updates = lease.provenance()
                updates.update(gpu_updates)
                self.store.update_run(run_id, **gpu_updates)

            if tier.kind == "torchrun":
                return self._execute_torchrun(
                    run_id, request, tier, workdir, run_dir, lease, cancel, gpu_wait_s
                )
            runner = self.runners.get(request.runner or tier.runner or self.config.runner)
            spec = build_pytest_spec(
                self.config, tier, run_id=run_id, tier_name=request.tier,
                markers=request.markers, timeout_s=request.timeout_s, workdir=workdir,
                run_dir=run_dir, runner_alias=runner.alias,
                devices=lease.devices if lease is not None else (), host=self.host,
            )  # fmt: skip
            self.store.update_run(
                run_id,
                outcome=Outcome.RUNNING,
                started_at=utcnow(),
                runner=runner.alias,
                argv=list(spec.argv),
                image=spec.image if runner.alias == "docker" else None,
            )
            log.info("run_started", runner=runner.alias, **bind)
            self.emit(
                RunStarted(
                    run_id, request.tier, request.trigger, run_dir, gpu_wait_s, request.fire_lag_s
                )
            )
            result = runner.run(spec, cancel)
            container = result.provenance.get("container_id")
            leaks = self._leak_check(lease, [container] if container else [])
            parsed = load_results(spec.results_path, spec.junit_path)
            outcome, reason = classify(result, parsed)
            if outcome is Outcome.CANCELLED:
                reason = self._cancel_reason(run_id) or reason
            record = self._finish(run_id, result, parsed, outcome, reason, leaks)
        finally:
            if lease is not None and self.gpu_pool is not None:
                self.gpu_pool.release(run_id)
            if checkout is not None and self.source is not None:
                final = self.store.get_run(run_id).outcome
                keep = final not in (Outcome.PASSED, Outcome.SKIPPED_OVERLAP)
                try:
                    self.source.release(checkout, keep=keep)
                except SchedctlError:
                    log.warning("worktree_release_failed", **bind)
        log.info("run_finished", outcome=record.outcome.value, reason=record.reason, **bind)
        return record

    def _cancel_reason(self, run_id: int) -> str:
        with self._lock:
            active = self._active.get(run_id)
        return active.cancel_reason if active else ""

    def _checkout(self, request: RunRequest, run_id: int) -> tuple[Path, Any, dict[str, Any]]:
        if self.source is None:
            path = self.config.project.path
            if path is None:
                raise SourceError("project.repo needs the git source; none configured")
            return path, None, {}
        checkout = self.source.checkout(request.ref, str(run_id))
        updates = {"sha": checkout.sha, "source": checkout.provenance()}
        if request.ref is None:
            updates["ref"] = checkout.ref
        return Path(checkout.path), checkout, updates

    def _execute_torchrun(
        self,
        run_id: int,
        request: RunRequest,
        tier: TierConfig,
        workdir: Path,
        run_dir: Path,
        lease: Any,
        cancel: threading.Event,
        gpu_wait_s: float,
    ) -> RunRecord:
        from scheduler.run.kinds.torchrun import LOCAL_RUNNER, ContainerRun, run_torchrun_tier

        runner = self.runners.get(request.runner or tier.runner or self.config.runner)
        in_container = runner.alias == "docker"
        image = tier.image or self.config.image
        container = None
        if in_container:
            container = ContainerRun(
                runner, str(run_id), request.tier, image, labels={"schedctl.host": self.host},
                grace_s=min(10.0, self.config.daemon.grace),
                log_limit_bytes=self.config.log_limit_bytes,
            )  # fmt: skip
        self.store.update_run(
            run_id,
            outcome=Outcome.RUNNING,
            started_at=utcnow(),
            runner=runner.alias if in_container else LOCAL_RUNNER,
            image=image if in_container else None,
        )
        self.emit(
            RunStarted(
                run_id, request.tier, request.trigger, run_dir, gpu_wait_s, request.fire_lag_s
            )
        )
        done = run_torchrun_tier(
            tier,
            python=self.config.project.python,
            workdir=workdir,
            run_dir=run_dir,
            timeout_s=tier.timeout if request.timeout_s is None else request.timeout_s,
            gpus=tuple(lease.devices) if lease is not None else (),
            cancel=cancel,
            env={**base_env(in_container), **tier.env},
            container=container,
        )
        outcome, reason = classify(done.result, ParsedResults(), done.verdict)
        if outcome is Outcome.CANCELLED:
            reason = self._cancel_reason(run_id) or reason
        containers = done.result.provenance.get("containers") or {}
        extra = {**done.details, **self._leak_check(lease, list(containers.values()))}
        return self._finish(run_id, done.result, ParsedResults(), outcome, reason, extra)

    def _leak_check(self, lease: Any, container_ids: Sequence[str] = ()) -> dict[str, Any]:
        """GPU processes left on the leased GPUs after the run.

        Those the run started (its run dir in their environment, or in one of its containers'
        cgroups) leaked and keep memory from the next run; the others are foreign processes
        that took a leased GPU while the run held it. Both are recorded, apart.
        """
        if lease is None or not lease.devices or self.gpu_pool is None:
            return {}
        try:
            found = self.gpu_pool.leaked_processes(lease)
        except GpuError as exc:
            return {"leak_check_error": str(exc)}
        run_dir = self.config.runs_dir / str(lease.run_id)
        ours = [p for p in found if started_by_run(p.pid, run_dir, container_ids, self.proc_root)]
        foreign = [p for p in found if p not in ours]
        if ours:
            log.warning("gpu_process_leaked", run_id=lease.run_id, pids=[p.pid for p in ours])
        if foreign:
            log.warning("gpu_foreign_process", run_id=lease.run_id, pids=[p.pid for p in foreign])
        return {
            "leaked_gpu_processes": [p.to_json() for p in ours],
            "foreign_gpu_processes": [p.to_json() for p in foreign],
        }

    def _finish(
        self,
        run_id: int,
        result: RunResult,
        parsed: ParsedResults,
        outcome: Outcome,
        reason: str,
        extra: dict[str, Any],
    ) -> RunRecord:
        provenance = dict(result.provenance)
        details: dict[str, Any] = {
            "termination": result.termination.value,
            "log_truncated": result.log_truncated,
            "results_source": parsed.source,
            "collected": parsed.collected,
            "provenance": provenance,
            **extra,
        }
        record = self.store.finish_run(
            run_id,
            results=parsed.tests + parsed.collect_errors,
            outcome=outcome,
            reason=reason,
            exit_code=result.exit_code,
            counts=parsed.counts,
            started_at=result.started_at,
            finished_at=result.finished_at,
            duration_s=result.duration_s,
            image_id=provenance.get("image_id"),
            container_id=provenance.get("container_id"),
            details=details,
        )
        self._finished(record)
        return record

    def _finish_early(self, run_id: int, outcome: Outcome, reason: str) -> RunRecord:
        record = self.store.finish_run(
            run_id, outcome=outcome, reason=reason, counts=empty_counts()
        )
        self._finished(record)
        return record

    def _finished(self, record: RunRecord) -> None:
        self.emit(
            RunFinished(
                record.id,
                record.tier,
                record.trigger,
                record.outcome,
                record.duration_s or 0.0,
                dict(record.counts),
                record.finished_at or utcnow(),
                record,
            )
        )


def _chain(source: threading.Event, target: threading.Event) -> None:
    """Set ``target`` when ``source`` is set (a caller's cancel reaches the run's own event)."""

    def watch() -> None:
        while not target.is_set():
            if source.wait(0.2):
                target.set()
                return

    threading.Thread(target=watch, daemon=True, name="cancel-chain").start()
