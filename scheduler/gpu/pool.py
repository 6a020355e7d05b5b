"""GPU leases across tiers: a priority queue of waiting runs over one shared sampler.

Rules (all threads of one daemon share a pool; other processes are kept out by the store):

- a GPU is grantable when the policy found it free in ``free_samples`` consecutive samples, it is
  not excluded and no run holds a lease on it in the store (written by any process);
- waiters are ordered by (priority, arrival); a waiter only takes GPUs that every waiter ahead of
  it, served first in order, leaves over: a higher-priority run that could use the free GPUs now
  gets them first, one that cannot (it needs more than are free) does not block smaller runs;
- the lowest free indices are picked; ``"all"`` means every non-excluded GPU of the host;
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

from runners.base import GpuDevice
from scheduler.gpu.lease import GpuWaitCancelled, GpuWaitTimeout, Lease, leaked_processes
from scheduler.gpu.policy import GpuVerdict, LeaseHolder, evaluate, is_excluded
from scheduler.gpu.probe import GpuProbe, GpuProcess, GpuSnapshot, HostGpuInfo
from scheduler.gpu.timed import build_probe
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable

if TYPE_CHECKING:
    from scheduler.config import Config, GpuPolicy  # annotations only: needs just pynvml

__all__ = ["GpuCount", "GpuPool", "LeaseStore", "build_pool", "lease_holders"]

GpuCount = int | Literal["all"]

_CANCEL_POLL_S = 0.25
"""Longest a waiter sleeps before it looks at its cancel event again."""


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
    ) -> None:
        self._store = store
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
    ) -> Lease:
        """Wait up to ``wait_s`` for ``count`` GPUs and lease them to ``run_id``.

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
        with self._enqueued(_Waiter(run_id, tier, count, priority, next(self._seq))) as waiter:
            while True:
                if cancel.is_set():
                    raise GpuWaitCancelled(f"run {run_id} cancelled while waiting for GPUs")
                self._refresh()
                with self._cond:
                    lease = self._try_grant(waiter, started)
                    if lease is not None:
                        return lease
                    now = self._clock()
                    if now >= deadline:
                        raise self._timeout(waiter, now - started)
                    self._cond.wait(self._pause(now, deadline))

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
            self._waiters.sort(key=lambda w: (w.priority, w.seq))
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
            except (NvmlUnavailable, GpuLost):
                self._sample = None
                raise
            except GpuError as exc:
                self._sample = _Sample(taken_at=self._clock(), error=exc)
                return
            now = self._clock()
            verdicts = {v.uuid: v for v in evaluate(host, self._policy, self._own_pids)}
            # Samples further apart than a few intervals are not "consecutive": start over.
            stale = previous is None or now - previous.taken_at > 3 * interval
            before = {} if stale or previous is None else previous.streaks
            streaks = {u: before.get(u, 0) + 1 if v.free else 0 for u, v in verdicts.items()}
            self._sample = _Sample(taken_at=now, host=host, verdicts=verdicts, streaks=streaks)

    def _try_grant(self, waiter: _Waiter, started: float) -> Lease | None:
        sample = self._sample
        if sample is None or sample.host is None:
            return None
        usable = [g for g in sample.host.gpus if not is_excluded(g, self._policy)]
        need = waiter.needed(len(usable))
        _check_possible(sample.host, usable, need, waiter)
        leased = lease_holders(self._store)
        available = [
            g
            for g in usable
            if g.uuid not in leased and sample.streaks.get(g.uuid, 0) >= self._policy.free_samples
        ]
        for ahead in self._waiters:
            if ahead is waiter:
                break
            if ahead.needed(len(usable)) <= len(available):
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
        usable = sum(1 for g in sample.host.gpus if not is_excluded(g, self._policy))
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
            if gpu.uuid in leased:
                why.append(str(leased[gpu.uuid]))
            streak = sample.streaks.get(gpu.uuid, 0)
            if verdict.free and streak < self._policy.free_samples:
                why.append(f"free in {streak} of {self._policy.free_samples} samples")
            reasons[f"gpu{gpu.index}"] = why or ["free but taken by a run ahead in the queue"]
        return reasons


def _check_possible(
    host: HostGpuInfo, usable: list[GpuSnapshot], need: int, waiter: _Waiter
) -> None:
    """Fail at once for a request no amount of waiting can meet."""
    if not host.gpus:
        raise NvmlUnavailable("NVML unavailable: the driver reports no GPUs on this host")
    if need == 0 or need > len(usable):
        excluded = len(host.gpus) - len(usable)
        raise GpuError(
            f"tier {waiter.tier} needs {waiter.describe(len(usable))} but this host has "
            f"{len(usable)} usable ({len(host.gpus)} present, {excluded} excluded by gpu.exclude)"
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


def build_pool(
    config: Config, store: LeaseStore, environ: Mapping[str, str] | None = None
) -> GpuPool:
    """The daemon's pool: backend from the environment, polls bounded by ``gpu.poll_timeout``."""
    return GpuPool(store, build_probe(config.gpu.poll_timeout, environ), config.gpu)
