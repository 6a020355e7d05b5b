"""GpuPool: leases across threads and processes, waiting, priorities, failures.

Waits run on a :class:`FakeMonotonic` the test moves: a deadline passes, or a new sample is due,
exactly when the test says so. "It waited and was refused" is seen in the lease-table reads of
the waiting thread (:class:`CountingStore`), never guessed from how long it has been.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runners.base import GpuDevice
from scheduler.config import config_from_mapping
from scheduler.gpu import (
    FakeProbe,
    GpuPool,
    GpuWaitCancelled,
    GpuWaitTimeout,
    HostGpuInfo,
    Lease,
    build_pool,
    write_fake_gpus,
)
from scheduler.kernel.errors import GpuError, NvmlUnavailable
from scheduler.store.engine import Store
from tests.scheduler.gpu.gpu_helpers import FOREIGN_PID, busy_gpu, fast_policy, gpu
from tests.waiting import FakeMonotonic, wait_for

NewRun = Callable[..., int]


class Attempt(threading.Thread):
    """``pool.acquire`` on its own thread, keeping the lease or the error."""

    def __init__(self, pool: GpuPool, run_id: int, tier: str, priority: int, **kw: Any) -> None:
        super().__init__(daemon=True)
        self.args = (pool, run_id, tier, priority, kw)
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.granted_at = 0.0

    def run(self) -> None:
        pool, run_id, tier, priority, kw = self.args
        try:
            self.lease = pool.acquire(
                run_id,
                tier,
                kw.get("count", 1),
                priority,
                kw.get("wait_s", 3.0),
                cancel=kw.get("cancel"),
            )
            self.granted_at = time.monotonic()
        except BaseException as exc:
            self.error = exc


def wait_until_waiting(pool: GpuPool, n: int) -> None:
    """Block until ``n`` runs are queued in the pool."""
    wait_for(lambda: len(pool.waiting()) >= n, 30, f"{n} runs queued in the pool")


class CountingStore:
    """The lease store, counting each thread's reads of the lease table.

    A waiter reads it once per look at a GPU sample, so two more reads by a waiting thread mean
    it has looked at the GPUs again, completely, and was refused.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reads: Counter[int | None] = Counter()
        self._lock = threading.Lock()

    def reads(self, thread: threading.Thread) -> int:
        with self._lock:
            return self._reads[thread.ident]

    def active_leases(self) -> list[dict[str, Any]]:
        rows = self.store.active_leases()
        with self._lock:
            self._reads[threading.get_ident()] += 1
        return rows

    def acquire_leases(self, run_id: int, tier: str, gpus: Any) -> bool:
        return self.store.acquire_leases(run_id, tier, gpus)

    def release_leases(self, run_id: int) -> None:
        self.store.release_leases(run_id)


def refused(leases: CountingStore, attempt: Attempt) -> None:
    """Wait until ``attempt`` has looked at the GPUs again and is still waiting."""
    seen = leases.reads(attempt)
    wait_for(
        lambda: leases.reads(attempt) >= seen + 2 or not attempt.is_alive(),
        30,
        f"run {attempt.args[1]} to look at the GPUs again",
    )
    assert attempt.is_alive() and attempt.lease is None, attempt.error


class CountingProbe:
    """A probe that counts the snapshots it has finished (error or not)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def snapshot(self) -> HostGpuInfo:
        try:
            return self.inner.snapshot()
        finally:
            self.calls += 1

    def close(self) -> None:
        self.inner.close()


class TestGrant:
    def test_busy_gpu0_gives_gpu1(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """GPU 0 has a foreign process: a 1-GPU run gets GPU 1, recorded in the store."""
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1)])
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy())
        run_id = new_run()
        lease = pool.acquire(run_id, "hourly", 1, 0, wait_s=1)
        assert lease.devices == (GpuDevice(1, "GPU-fake-1"),)
        assert [(r["gpu_index"], r["run_id"], r["tier"]) for r in store.active_leases()] == [
            (1, run_id, "hourly")
        ]

    def test_lowest_indices_first(self, probe: FakeProbe, store: Store, new_run: NewRun) -> None:
        """With both GPUs free, one GPU means GPU 0 and the next run gets GPU 1."""
        pool = GpuPool(store, probe, fast_policy())
        assert pool.acquire(new_run(), "hourly", 1, 0, 1).uuids == ["GPU-fake-0"]
        assert pool.acquire(new_run(), "daily", 1, 1, 1).uuids == ["GPU-fake-1"]

    def test_all_means_every_non_excluded_gpu(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """``all`` leases every GPU except the excluded ones."""
        write_fake_gpus(gpu_file, [gpu(0), gpu(1), gpu(2)])
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy(exclude=[1]))
        assert [d.index for d in pool.acquire(new_run(), "weekly", "all", 2, 1).devices] == [0, 2]

    def test_zero_gpus_never_polls(self, store: Store) -> None:
        """A tier without GPUs gets an empty lease without touching NVML."""

        class Exploding:
            def snapshot(self) -> HostGpuInfo:
                raise AssertionError("probe must not be called")

            def close(self) -> None:
                pass

        lease = GpuPool(store, Exploding(), fast_policy()).acquire(1, "hourly", 0, 0, 1)
        assert not lease and lease.devices == () and lease.provenance()["gpus"] == []

    def test_release_frees_for_the_next_run(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """After release a waiting run gets the GPU without waiting out its deadline."""
        write_fake_gpus(gpu_file, [gpu(0)])
        leases = CountingStore(store)
        clock = FakeMonotonic()
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(sample_interval=5), clock=clock)
        first = new_run()
        pool.acquire(first, "hourly", 1, 0, 1)
        waiter = Attempt(pool, new_run(), "daily", 1, wait_s=5)
        waiter.start()
        refused(leases, waiter)
        pool.release(first)
        waiter.join(30)
        assert waiter.lease is not None and waiter.lease.uuids == ["GPU-fake-0"]
        assert waiter.lease.waited_s == 0  # the clock never moved: no new sample, no deadline


class TestWaiting:
    def test_both_busy_times_out_with_reasons(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """Both GPUs busy: the run waits wait_s, then GpuWaitTimeout names each GPU's reason."""
        write_fake_gpus(gpu_file, [busy_gpu(0), gpu(1)])
        leases = CountingStore(store)
        clock = FakeMonotonic()
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(), clock=clock)
        holder = new_run("daily")
        pool.acquire(holder, "daily", 1, 1, 1)
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=0.5)
        waiter.start()
        refused(leases, waiter)
        clock.advance(0.375)
        refused(leases, waiter)  # 0.125 s before its deadline it still waits
        clock.advance(0.125)
        waiter.join(30)
        assert isinstance(waiter.error, GpuWaitTimeout)
        assert waiter.error.waited_s == 0.5
        message = str(waiter.error)
        assert f"gpu0: foreign process pid {FOREIGN_PID} (8000 MiB)" in message
        assert f"gpu1: leased to run {holder} (daily)" in message
        assert message.startswith("no 1 GPU free after waiting 0.5s")
        assert isinstance(waiter.error, GpuError)
        assert pool.waiting() == []

    def test_gpu_freed_while_waiting(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """GPU 0 becomes free while the run waits: the run starts on it."""
        write_fake_gpus(gpu_file, [busy_gpu(0), busy_gpu(1)])
        leases = CountingStore(store)
        clock = FakeMonotonic()
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(free_samples=2), clock=clock)
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=3)
        waiter.start()
        refused(leases, waiter)
        write_fake_gpus(gpu_file, [gpu(0), busy_gpu(1)])
        clock.advance(0.0625)
        refused(leases, waiter)  # free in one sample: not yet (free_samples=2)
        clock.advance(0.0625)
        waiter.join(30)
        assert waiter.lease is not None and waiter.lease.uuids == ["GPU-fake-0"]
        assert waiter.lease.waited_s == 0.125

    def test_needs_consecutive_free_samples(self, store: Store, new_run: NewRun) -> None:
        """A GPU that is free only every other sample is never granted with free_samples=2."""

        class Flapping:
            def __init__(self) -> None:
                self.n = 0

            def snapshot(self) -> HostGpuInfo:
                self.n += 1
                entry = gpu(0) if self.n % 2 else busy_gpu(0)
                return _host(entry)

            def close(self) -> None:
                pass

        flapping = Flapping()
        leases = CountingStore(store)
        clock = FakeMonotonic()
        pool = GpuPool(leases, flapping, fast_policy(free_samples=2), clock=clock)
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=0.5)
        waiter.start()
        refused(leases, waiter)
        for _ in range(7):  # a new sample every 0.0625 s: free, busy, free, ...
            clock.advance(0.0625)
            refused(leases, waiter)
        clock.advance(0.0625)  # the deadline
        waiter.join(30)
        assert isinstance(waiter.error, GpuWaitTimeout), waiter.lease
        assert re.search(r"free in 1 of 2 samples|foreign process", str(waiter.error))
        assert flapping.n >= 4
        always_free = GpuPool(store, _Static(_host(gpu(0))), fast_policy(free_samples=3))
        lease = always_free.acquire(new_run(), "hourly", 1, 0, wait_s=2)
        assert lease.waited_s >= 2 * 0.05 * 0.9

    def test_cancel_stops_the_wait(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """Setting the cancel event ends the wait with GpuWaitCancelled, long before its deadline.

        The pool's clock never moves here, so the deadline cannot be what ends the wait.
        """
        write_fake_gpus(gpu_file, [busy_gpu(0)])
        leases = CountingStore(store)
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(), clock=FakeMonotonic())
        cancel = threading.Event()
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=10, cancel=cancel)
        waiter.start()
        refused(leases, waiter)
        cancel.set()
        waiter.join(30)
        assert isinstance(waiter.error, GpuWaitCancelled)

    def test_transient_errors_keep_waiting(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """A garbled reading is retried until the GPU can be read again."""
        gpu_file.write_text("{garbled")
        probe = CountingProbe(FakeProbe(gpu_file))
        clock = FakeMonotonic()
        pool = GpuPool(store, probe, fast_policy(), clock=clock)
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=3600)
        waiter.start()
        wait_for(lambda: probe.calls >= 1, 30, "the garbled reading")
        assert waiter.is_alive(), waiter.error
        write_fake_gpus(gpu_file, [gpu(0)])
        for _ in range(600):  # the next sample after the rewrite must grant it
            clock.advance(0.0625)
            waiter.join(0.05)
            if not waiter.is_alive():
                break
        assert waiter.lease is not None and waiter.lease.uuids == ["GPU-fake-0"], waiter.error
        assert probe.calls >= 2

    def test_transient_error_reason_on_timeout(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """If NVML never answers sensibly, the timeout carries that error as the reason."""
        gpu_file.write_text("{garbled")
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy())
        with pytest.raises(GpuWaitTimeout, match=r"nvml: fake GPU file .* invalid JSON"):
            pool.acquire(new_run(), "hourly", 1, 0, wait_s=0.3)


class TestFailFast:
    def test_no_nvml_raises_at_once(self, tmp_path: Path, store: Store, new_run: NewRun) -> None:
        """NvmlUnavailable is raised immediately with its reason, not after the wait.

        The pool's clock never moves, so only an immediate raise ends this wait.
        """
        probe = FakeProbe(tmp_path / "absent.json")
        pool = GpuPool(store, probe, fast_policy(), clock=FakeMonotonic())
        waiter = Attempt(pool, new_run(), "hourly", 0, wait_s=10)
        waiter.start()
        waiter.join(30)
        assert isinstance(waiter.error, NvmlUnavailable), waiter.error
        assert re.search(r"absent\.json does not exist", str(waiter.error))

    def test_more_gpus_than_the_host_has(
        self, probe: FakeProbe, store: Store, new_run: NewRun
    ) -> None:
        """Asking for 3 GPUs on a 2-GPU host fails at once with a clear message."""
        pool = GpuPool(store, probe, fast_policy())
        with pytest.raises(GpuError, match="needs 3 GPUs but this host has 2 usable"):
            pool.acquire(new_run(), "weekly", 3, 0, wait_s=10)

    def test_host_without_gpus(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """A driver that reports zero GPUs is NvmlUnavailable."""
        write_fake_gpus(gpu_file, [])
        with pytest.raises(NvmlUnavailable, match="no GPUs"):
            GpuPool(store, FakeProbe(gpu_file), fast_policy()).acquire(new_run(), "hourly", 1, 0, 5)


class TestSharing:
    def test_never_two_holders(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """Two tiers hammering one GPU never hold it at the same time."""
        write_fake_gpus(gpu_file, [gpu(0)])
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy(sample_interval=0.01))
        holders: list[int] = []
        overlaps: list[list[int]] = []
        errors: list[BaseException] = []
        finished: set[str] = set()
        lock = threading.Lock()

        def worker(tier: str, priority: int, rival: str) -> None:
            try:
                for _ in range(8):
                    run_id = new_run(tier)
                    pool.acquire(run_id, tier, 1, priority, wait_s=30)
                    with lock:
                        holders.append(run_id)
                        if len(holders) > 1:
                            overlaps.append(list(holders))
                    # Hold the GPU until the rival is queued for it: every round is contended.
                    wait_for(lambda: pool.waiting() or rival in finished, 30, f"{rival} to queue")
                    with lock:
                        holders.remove(run_id)
                    pool.release(run_id)
            except BaseException as exc:
                errors.append(exc)
            finally:
                finished.add(tier)

        pairs = (("hourly", 0, "daily"), ("daily", 1, "hourly"))
        threads = [threading.Thread(target=worker, args=a) for a in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert overlaps == []
        assert store.active_leases() == []

    def test_higher_priority_goes_first(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """Both wait for the one GPU: the hourly tier (priority 0) gets it before weekly (2)."""
        write_fake_gpus(gpu_file, [gpu(0)])
        leases = CountingStore(store)
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(), clock=FakeMonotonic())
        blocker = new_run("daily")
        pool.acquire(blocker, "daily", 1, 1, 1)
        weekly = Attempt(pool, new_run("weekly"), "weekly", 2)
        weekly.start()
        wait_until_waiting(pool, 1)
        hourly = Attempt(pool, new_run("hourly"), "hourly", 0)
        hourly.start()
        wait_until_waiting(pool, 2)
        assert [tier for _, tier, _ in pool.waiting()] == ["hourly", "weekly"]
        pool.release(blocker)
        hourly.join(30)
        assert hourly.lease is not None and weekly.lease is None
        refused(leases, weekly)  # weekly looked again while hourly held it: it must not share
        pool.release(hourly.lease.run_id)
        weekly.join(30)
        assert weekly.lease is not None and weekly.granted_at > hourly.granted_at

    def test_fifo_within_a_priority(self, gpu_file: Path, store: Store, new_run: NewRun) -> None:
        """Equal priorities are served in arrival order."""
        write_fake_gpus(gpu_file, [gpu(0)])
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy(), clock=FakeMonotonic())
        blocker = new_run()
        pool.acquire(blocker, "hourly", 1, 0, 1)
        first = Attempt(pool, new_run(), "a", 1)
        first.start()
        wait_until_waiting(pool, 1)
        second = Attempt(pool, new_run(), "b", 1)
        second.start()
        wait_until_waiting(pool, 2)
        pool.release(blocker)
        first.join(30)
        assert first.lease is not None and second.lease is None
        pool.release(first.lease.run_id)
        second.join(30)
        assert second.lease is not None

    def test_waiting_all_request_reserves_the_free_gpus(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """Issue 17: once an ``all`` request waits, a smaller run may not take the GPU it waits
        for; it is served as soon as the one run holding a GPU ends, before the smaller run."""
        leases = CountingStore(store)
        pool = GpuPool(leases, FakeProbe(gpu_file), fast_policy(), clock=FakeMonotonic())
        holder = pool.acquire(new_run("hourly"), "hourly", 1, 0, 1)
        assert holder.uuids == ["GPU-fake-0"]
        weekly = Attempt(pool, new_run("weekly"), "weekly", 0, count="all", wait_s=60)
        weekly.start()
        wait_until_waiting(pool, 1)
        small = Attempt(pool, new_run("daily"), "daily", 5, wait_s=60)
        small.start()
        wait_until_waiting(pool, 2)
        refused(leases, small)  # GPU 1 is free, but reserved for the waiting 'all' request
        refused(leases, small)
        assert weekly.is_alive() and weekly.lease is None
        pool.release(holder.run_id)  # the one run's length is over
        weekly.join(30)
        assert weekly.lease is not None, weekly.error
        assert weekly.lease.uuids == ["GPU-fake-0", "GPU-fake-1"]
        assert small.is_alive() and small.lease is None
        pool.release(weekly.lease.run_id)
        small.join(30)
        assert small.lease is not None and small.granted_at > weekly.granted_at

    def test_lease_from_another_process(
        self, probe: FakeProbe, store: Store, new_run: NewRun
    ) -> None:
        """Leases written by another process are honoured, and their release is noticed."""
        other = new_run("daily")
        assert store.acquire_leases(other, "daily", [(0, "GPU-fake-0"), (1, "GPU-fake-1")])
        leases = CountingStore(store)
        pool = GpuPool(leases, probe, fast_policy(), clock=FakeMonotonic())
        waiter = Attempt(pool, new_run(), "hourly", 0, count=2, wait_s=3)
        waiter.start()
        refused(leases, waiter)  # honoured: the other process holds both
        store.release_leases(other)  # as that process would: nothing wakes this pool
        waiter.join(30)
        assert waiter.lease is not None
        assert waiter.lease.uuids == ["GPU-fake-0", "GPU-fake-1"]

    def test_losing_a_race_keeps_waiting(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """Another process leasing the GPU between our read and write makes us wait, not share."""
        write_fake_gpus(gpu_file, [gpu(0)])
        rival = new_run("daily")

        class RacingStore:
            def __init__(self) -> None:
                self.raced = False

            def acquire_leases(self, run_id: int, tier: str, gpus: Any) -> bool:
                if not self.raced:
                    self.raced = True
                    assert store.acquire_leases(rival, "daily", gpus)
                return store.acquire_leases(run_id, tier, gpus)

            def release_leases(self, run_id: int) -> None:
                store.release_leases(run_id)

            def active_leases(self) -> list[dict[str, Any]]:
                return store.active_leases()

        pool = GpuPool(RacingStore(), FakeProbe(gpu_file), fast_policy())
        with pytest.raises(GpuWaitTimeout, match=f"leased to run {rival} \\(daily\\)"):
            pool.acquire(new_run(), "hourly", 1, 0, wait_s=0.3)
        assert [r["run_id"] for r in store.active_leases()] == [rival]


class TestCrashRecovery:
    def test_dead_run_leases_are_released(
        self, probe: FakeProbe, store: Store, new_run: NewRun
    ) -> None:
        """A crashed run's leases block until recovery marks it interrupted and drops them."""
        crashed = new_run("daily")
        pool = GpuPool(store, probe, fast_policy())
        pool.acquire(crashed, "daily", "all", 1, 1)
        fresh = GpuPool(store, probe, fast_policy())  # the restarted daemon
        with pytest.raises(GpuWaitTimeout, match=f"leased to run {crashed}"):
            fresh.acquire(new_run(), "hourly", 1, 0, wait_s=0.2)
        assert store.release_dead_leases() == 0, "a running run keeps its leases"
        store.update_run(crashed, outcome="interrupted")
        assert store.release_dead_leases() == 2
        assert fresh.acquire(new_run(), "hourly", 1, 0, wait_s=1).uuids == ["GPU-fake-0"]


class _Static:
    """A probe that always returns the same snapshot."""

    def __init__(self, host: HostGpuInfo) -> None:
        self.host = host

    def snapshot(self) -> HostGpuInfo:
        return self.host

    def close(self) -> None:
        pass


def _host(*entries: dict[str, Any]) -> HostGpuInfo:
    from scheduler.gpu.fake import host_from_json

    return host_from_json({"gpus": list(entries)})


class TestAssembly:
    def test_build_pool_from_config(
        self, gpu_file: Path, store: Store, new_run: NewRun, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """build_pool uses the fake backend named by the environment and the config's policy."""
        monkeypatch.setenv("SCHEDCTL_FAKE_GPUS", str(gpu_file))
        config = config_from_mapping(
            {"project": {"path": "."}, "tiers": {"hourly": {"gpus": 1}}, "gpu": {"free_samples": 1}}
        )
        lease = build_pool(config, store).acquire(new_run(), "hourly", 1, 0, 1)
        assert lease.uuids == ["GPU-fake-0"]

    @pytest.mark.parametrize("count", [-1, "some", 1.5])
    def test_bad_count_is_rejected(self, probe: FakeProbe, store: Store, count: Any) -> None:
        """Only positive ints and 'all' are GPU counts."""
        with pytest.raises(ValueError, match="positive int or 'all'"):
            GpuPool(store, probe, fast_policy()).acquire(1, "hourly", count, 0, 1)

    def test_pool_checks_leaks_with_its_probe(
        self, gpu_file: Path, store: Store, new_run: NewRun
    ) -> None:
        """pool.leaked_processes reports a process left on the leased GPU."""
        pool = GpuPool(store, FakeProbe(gpu_file), fast_policy())
        lease = pool.acquire(new_run(), "hourly", 1, 0, 1)
        write_fake_gpus(gpu_file, [gpu(0, procs=((31337, 500),)), gpu(1)])
        assert [p.pid for p in pool.leaked_processes(lease, settle_s=0)] == [31337]
