"""GPU leases across tiers: a priority queue of waiting runs over one shared sampler.

Rules (all threads of one daemon share a pool; other processes are kept out by the store):

- a GPU is grantable when the policy found it free in ``free_samples`` consecutive samples, it is
  not excluded and no run holds a lease on it in the store (written by any process);
- waiters are ordered by (priority, arrival); a waiter only takes GPUs that every waiter ahead of
  it leaves over, and a waiter ahead *reserves* the free GPUs it is waiting for even when it
  cannot start yet: a run asking for ``all`` (or N) is never starved by smaller runs slipping in,
  it is served as soon as the runs holding its GPUs end;
- a waiter whose tier ``preempts`` the holders' tiers asks the dispatcher to stop them (once per
  holder) when that would give it enough GPUs;
- the lowest free indices are picked; ``"all"`` means every GPU of the host that is not excluded
  and not drained;
- with a :class:`~scheduler.gpu.health.HealthMonitor`, every sample and every grant is checked
  (the pre-flight check): a GPU with a finding is drained, the grant is taken back and the
  waiter goes on with the healthy GPUs;
- the lease is written to the store atomically (``acquire_leases``), so two processes racing for
  the same GPU cannot both win: the loser keeps waiting.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

from runners.base import GpuDevice
from scheduler.gpu.health import HOST_KEY, FindingCode, HealthMonitor
from scheduler.gpu.lease import GpuWaitCancelled, GpuWaitTimeout, Lease, leaked_processes
from scheduler.gpu.policy import GpuVerdict, LeaseHolder, evaluate, is_excluded
from scheduler.gpu.probe import GpuProbe, GpuProcess, GpuSnapshot, HostGpuInfo
from scheduler.gpu.timed import build_probe
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable

if TYPE_CHECKING:
    from scheduler.config import Config, GpuPolicy  # annotations only: needs just pynvml

__all__ = ["GpuCount", "GpuPool", "LeaseStore", "Preempter", "build_pool", "lease_holders"]

log = structlog.get_logger("schedctl.gpu.pool")

GpuCount = int | Literal["all"]

_CANCEL_POLL_S = 0.25
"""Longest a waiter sleeps before it looks at its cancel event again."""

Preempter = Callable[[int, str], bool]
"""``(run_id, reason) -> asked``: asks the run holding a lease to stop (the dispatcher's)."""


class LeaseStore(Protocol):
    """The part of :class:`scheduler.store.Store` the pool uses."""

    def acquire_leases(self, run_id: int, tier: str, gpus: Sequence[tuple[int, str]]) -> bool: ...

    def release_leases(self, run_id: int) -> None: ...

    def active_leases(self) -> list[dict[str, Any]]: ...


def lease_holders(store: LeaseStore) -> dict[str, LeaseHolder]:
    """GPU UUID -> the run holding it, from the store's lease table."""
    rows = store.active_leases()
    return {row["gpu_uuid"]: LeaseHolder(row["run_id"], row["tier"]) for row in rows}


@dataclass(frozen=True)
class _Waiter:
    run_id: int
    tier: str
    count: int | str
    priority: int
    seq: int
    preempts: frozenset[str] = frozenset()

    def needed(self, usable: int) -> int:
        return usable if isinstance(self.count, str) else self.count

    def describe(self, usable: int | None) -> str:
        if self.count == "all":
            return "all GPUs" if usable is None else f"all {usable} GPUs"
        return f"{self.count} GPU" + ("s" if self.count != 1 else "")


@dataclass(frozen=True)
class _Sample:
    """The latest poll, replaced as a whole so readers never see half an update."""

    taken_at: float
    host: HostGpuInfo | None = None
    verdicts: Mapping[str, GpuVerdict] = field(default_factory=dict)
    streaks: Mapping[str, int] = field(default_factory=dict)
    error: GpuError | None = None


class GpuPool:
    """Hands exact GPUs to runs and takes them back; safe to share between threads.

    Args:
        store: where leases live (tied to run rows, so a crash cannot strand them for good).
        probe: the GPU probe; wrap NVML in a :class:`TimedProbe` so a hung driver cannot block.
        own_pids: processes that are not foreign on a GPU (default: this process).
        clock: monotonic seconds, injected for tests.
    """

    def __init__(
        self,
        store: LeaseStore,
        probe: GpuProbe,
        policy: GpuPolicy,
        *,
        own_pids: Collection[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: HealthMonitor | None = None,
    ) -> None:
        self._store = store
        self.health = health
        self._preempter: Preempter | None = None
        self._probe = probe
        self._policy = policy
        self._own_pids = frozenset({os.getpid()} if own_pids is None else own_pids)
        self._clock = clock
        self._cond = threading.Condition()
        self._sample_lock = threading.Lock()
        self._sample: _Sample | None = None
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    def acquire(
        self,
        run_id: int,
        tier: str,
        count: int | str,
        priority: int,
        wait_s: float,
        cancel: threading.Event | None = None,
        preempts: Collection[str] = (),
    ) -> Lease:
        """Wait up to ``wait_s`` for ``count`` GPUs and lease them to ``run_id``.

        ``preempts``: tiers whose leases this run may ask to stop (see :meth:`set_preempter`).

        Raises:
            GpuWaitTimeout: the wait ran out; the message names each GPU's last reason.
            GpuWaitCancelled: ``cancel`` was set while waiting.
            NvmlUnavailable, GpuLost: at once, without waiting.
            GpuError: the request can never be met on this host (more GPUs than it has).
        """
        if count == 0:
            return Lease(run_id, tier)
        if not (count == "all" or (isinstance(count, int) and count > 0)):
            raise ValueError(f"GPU count must be a positive int or 'all', got {count!r}")
        cancel = cancel or threading.Event()
        started = self._clock()
        deadline = started + wait_s
        waiter = _Waiter(run_id, tier, count, priority, next(self._seq), frozenset(preempts))
        asked: set[int] = set()
        with self._enqueued(waiter):
            while True:
                if cancel.is_set():
                    raise GpuWaitCancelled(f"run {run_id} cancelled while waiting for GPUs")
                self._refresh()
                with self._cond:
                    lease = self._try_grant(waiter, started)
                    victims = [] if lease is not None else self._victims(waiter, asked)
                if lease is not None:
                    if self._healthy(lease):
                        return lease
                    continue  # drained by the pre-flight check: look again without it
                self._preempt(waiter, victims, asked)
                with self._cond:
                    now = self._clock()
                    if now >= deadline:
                        raise self._timeout(waiter, now - started)
                    self._cond.wait(self._pause(now, deadline))

    def set_preempter(self, preempter: Preempter | None) -> None:
        """Who stops a run holding a lease that a preempting waiter needs (the dispatcher)."""
        self._preempter = preempter

    def evidence(self, uuids: Sequence[str]) -> dict[str, Any]:
        """These GPUs' readings and health counters now (hang evidence); errors are recorded."""
        wanted = set(uuids)
        out: dict[str, Any] = {"uuids": list(uuids)}
        try:
            host = self._probe.snapshot()
            out["gpus"] = [g.to_json() for g in host.gpus if g.uuid in wanted]
        except GpuError as exc:
            out["snapshot_error"] = str(exc)
        if self.health is not None:
            try:
                # Through the monitor: a hang caused by an Xid drains the GPU as it is found.
                findings = self.health.check(None, set(lease_holders(self._store)))
                out["health_findings"] = [f.describe() for f in findings if f.uuid in wanted]
            except GpuError as exc:
                out["health_error"] = str(exc)
        return out

    def set_notify(self, notify: Callable[[Any], None] | None) -> None:
        """Where drain and undrain events go (the dispatcher's event bus)."""
        if self.health is not None:
            self.health.notify = notify

    def _healthy(self, lease: Lease) -> bool:
        """The pre-flight check of a grant; a GPU with a finding is drained and the grant undone.

        A failed health read (not a finding) does not block the lease: the snapshot just
        found the GPUs answering, and the daemon must not stop running tests on a flaky read.
        """
        if self.health is None:
            return True
        leased = set(lease_holders(self._store)) - set(lease.uuids)
        try:
            findings = self.health.check(self._sample.host if self._sample else None, leased)
        except GpuError:
            return True
        bad = {f.uuid for f in findings if f.code is not FindingCode.GPU_MISSING}
        if bad & set(lease.uuids):
            self.release(lease.run_id)
            return False
        return True

    def _victims(self, waiter: _Waiter, asked: set[int]) -> list[int]:
        """Runs to ask to stop so that ``waiter`` gets its GPUs (none when that cannot help)."""
        sample = self._sample
        if not waiter.preempts or self._preempter is None or sample is None or not sample.host:
            return []
        usable = self._usable(sample.host)
        leased = lease_holders(self._store)
        need = waiter.needed(len(usable))
        free = [g for g in usable if g.uuid not in leased]
        preemptable = [
            g for g in usable if g.uuid in leased and leased[g.uuid].tier in waiter.preempts
        ]
        missing = need - len(free)
        if missing <= 0 or missing > len(preemptable):
            return []
        victims: list[int] = []
        for gpu in preemptable:
            if missing <= 0:
                break
            holder = leased[gpu.uuid].run_id
            if holder not in victims:
                victims.append(holder)
            missing -= sum(1 for g in preemptable if leased[g.uuid].run_id == holder)
        return [v for v in victims if v not in asked]

    def _preempt(self, waiter: _Waiter, victims: list[int], asked: set[int]) -> None:
        for run_id in victims:
            asked.add(run_id)
            reason = f"preempted by run {waiter.run_id} ({waiter.tier})"
            if self._preempter is not None and self._preempter(run_id, reason):
                log.info("gpu_preempting", run_id=run_id, by=waiter.run_id, tier=waiter.tier)

    def _usable(self, host: HostGpuInfo) -> list[GpuSnapshot]:
        drained = self.health.drained() if self.health is not None else {}
        return [g for g in host.gpus if not is_excluded(g, self._policy) and g.uuid not in drained]

    def leaked_processes(self, lease: Lease, settle_s: float = 2.0) -> list[GpuProcess]:
        """:func:`scheduler.gpu.lease.leaked_processes` with this pool's probe."""
        return leaked_processes(lease, self._probe, settle_s=settle_s)

    def release(self, run_id: int) -> None:
        """Give back every GPU of ``run_id`` and wake the waiters."""
        self._store.release_leases(run_id)
        with self._cond:
            self._cond.notify_all()

    def waiting(self) -> list[tuple[int, str, int]]:
        """``(run_id, tier, priority)`` of each waiting run, first in line first."""
        with self._cond:
            return [(w.run_id, w.tier, w.priority) for w in self._waiters]

    @contextmanager
    def _enqueued(self, waiter: _Waiter) -> Iterator[_Waiter]:
        with self._cond:
            self._waiters.append(waiter)
            # A preempting waiter goes first: the runs it stops must not win their GPUs back.
            self._waiters.sort(key=lambda w: (not w.preempts, w.priority, w.seq))
        try:
            yield waiter
        finally:
            with self._cond:
                self._waiters.remove(waiter)
                self._cond.notify_all()

    def _pause(self, now: float, deadline: float) -> float:
        """Sleep until the next sample is due, the deadline, or the next look at ``cancel``."""
        sample = self._sample
        next_sample = now if sample is None else sample.taken_at + self._policy.sample_interval
        return max(0.0, min(next_sample - now, deadline - now, _CANCEL_POLL_S))

    def _refresh(self) -> None:
        """Poll the probe unless another waiter just did; only one thread polls at a time."""
        interval = self._policy.sample_interval
        with self._sample_lock:
            previous = self._sample
            if previous is not None and self._clock() - previous.taken_at < 0.9 * interval:
                return
            try:
                host = self._probe.snapshot()
            except GpuLost:
                self._sample = None
                self._drain_lost()
                raise
            except NvmlUnavailable:
                self._sample = None
                raise
            except GpuError as exc:
                self._sample = _Sample(taken_at=self._clock(), error=exc)
                return
            if self.health is not None:
                try:
                    self.health.check(host, set(lease_holders(self._store)))
                except GpuError as exc:
                    log.warning("gpu_health_check_failed", error=str(exc))
            now = self._clock()
            verdicts = {v.uuid: v for v in evaluate(host, self._policy, self._own_pids)}
            # Samples further apart than a few intervals are not "consecutive": start over.
            stale = previous is None or now - previous.taken_at > 3 * interval
            before = {} if stale or previous is None else previous.streaks
            streaks = {u: before.get(u, 0) + 1 if v.free else 0 for u, v in verdicts.items()}
            self._sample = _Sample(taken_at=now, host=host, verdicts=verdicts, streaks=streaks)

    def _drain_lost(self) -> None:
        """The snapshot failed on a lost GPU: the health read, device by device, names it."""
        if self.health is None:
            return
        try:
            self.health.check(None, set(lease_holders(self._store)))
        except GpuError as exc:
            log.warning("gpu_health_check_failed", error=str(exc))

    def _try_grant(self, waiter: _Waiter, started: float) -> Lease | None:
        sample = self._sample
        if sample is None or sample.host is None:
            return None
        drained = self.health.drained() if self.health is not None else {}
        usable = self._usable(sample.host)
        need = waiter.needed(len(usable))
        _check_possible(sample.host, usable, need, waiter, drained)
        leased = lease_holders(self._store)
        available = [
            g
            for g in usable
            if g.uuid not in leased and sample.streaks.get(g.uuid, 0) >= self._policy.free_samples
        ]
        for ahead in self._waiters:
            if ahead is waiter:
                break
            # Served or not, a waiter ahead holds on to the free GPUs it is waiting for.
            available = available[ahead.needed(len(usable)) :]
        if need > len(available):
            return None
        picked = available[:need]
        pairs = [(g.index, g.uuid) for g in picked]
        if not self._store.acquire_leases(waiter.run_id, waiter.tier, pairs):
            return None  # another process leased one of them between our read and write
        return _lease(waiter, picked, sample.host, self._clock() - started)

    def _timeout(self, waiter: _Waiter, waited_s: float) -> GpuWaitTimeout:
        sample = self._sample
        if sample is None or sample.host is None:
            error = str(sample.error) if sample and sample.error else "no GPU sample was taken"
            return GpuWaitTimeout(waiter.describe(None), waited_s, {"nvml": [error]})
        usable = len(self._usable(sample.host))
        reasons = self._reasons(sample.host, sample, lease_holders(self._store))
        return GpuWaitTimeout(waiter.describe(usable), waited_s, reasons)

    def _reasons(
        self, host: HostGpuInfo, sample: _Sample, leased: Mapping[str, LeaseHolder]
    ) -> dict[str, list[str]]:
        """Why each GPU was not granted, as of the last sample."""
        reasons: dict[str, list[str]] = {}
        for gpu in host.gpus:
            verdict = sample.verdicts[gpu.uuid]
            why = list(verdict.reasons)
            drain = self.health.drained().get(gpu.uuid) if self.health is not None else None
            if drain is not None:
                why.append(f"drained ({drain['code']}: {drain['reason']})")
            if gpu.uuid in leased:
                why.append(str(leased[gpu.uuid]))
            streak = sample.streaks.get(gpu.uuid, 0)
            if verdict.free and streak < self._policy.free_samples:
                why.append(f"free in {streak} of {self._policy.free_samples} samples")
            reasons[f"gpu{gpu.index}"] = why or ["free but reserved by a run ahead in the queue"]
        return reasons


def _check_possible(
    host: HostGpuInfo,
    usable: list[GpuSnapshot],
    need: int,
    waiter: _Waiter,
    drained: Mapping[str, Mapping[str, Any]],
) -> None:
    """Fail at once for a request no amount of waiting can meet (drains end only by a person or
    a clean re-check, not by waiting out ``gpu.wait``)."""
    if not host.gpus:
        raise NvmlUnavailable("NVML unavailable: the driver reports no GPUs on this host")
    missing = drained.get(HOST_KEY)
    if waiter.count == "all" and missing is not None:
        raise GpuError(f"tier {waiter.tier} needs all GPUs: {missing['code']}: {missing['reason']}")
    if need == 0 or need > len(usable):
        sick = [
            f"gpu{row['gpu_index']} {row['code']}: {row['reason']}"
            for key, row in drained.items()
            if key != HOST_KEY
        ]
        excluded = len(host.gpus) - len(usable) - len(sick)
        raise GpuError(
            f"tier {waiter.tier} needs {waiter.describe(len(usable))} but this host has "
            f"{len(usable)} usable ({len(host.gpus)} present, {excluded} excluded by gpu.exclude"
            + (f", {len(sick)} drained: {'; '.join(sick)}" if sick else "")
            + ")"
        )


def _lease(waiter: _Waiter, picked: list[GpuSnapshot], host: HostGpuInfo, waited_s: float) -> Lease:
    return Lease(
        run_id=waiter.run_id,
        tier=waiter.tier,
        devices=tuple(GpuDevice(g.index, g.uuid) for g in picked),
        gpus=tuple(picked),
        driver_version=host.driver_version,
        cuda_version=host.cuda_version,
        waited_s=waited_s,
        pids_at_start=frozenset(p.pid for g in picked for p in g.processes),
    )


def build_pool(config: Config, store: Any, environ: Mapping[str, str] | None = None) -> GpuPool:
    """The daemon's pool: backend from the environment, polls bounded by ``gpu.poll_timeout``,
    the pre-flight health check draining into ``store`` (a :class:`scheduler.store.Store`)."""
    probe = build_probe(config.gpu.poll_timeout, environ)
    own = {os.getpid()}
    health = HealthMonitor(
        probe, store, expected_count=config.gpu.expected_count,
        check_processes=config.gpu.drain_unexplained_processes, own_pids=own,
    )  # fmt: skip
    return GpuPool(store, probe, config.gpu, own_pids=own, health=health)
