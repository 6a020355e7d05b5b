"""The dispatcher with the fake runner: rows first, overlap, crashes, recovery, events."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runners.base import RunResult, RunSpec
from runners.fake import FakeBehaviour, FakeRunner, always
from scheduler.config import Config
from scheduler.kernel.errors import UnknownTierError
from scheduler.kernel.events import Event, RunFinished, RunQueued, RunStarted
from scheduler.kernel.outcome import Outcome, Termination
from scheduler.run.dispatch import RunRequest
from scheduler.store.engine import RunRecord, Store
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for


def running_row(
    store: Store,
    tier: str,
    host: str,
    owner_pid: int,
    *,
    trigger: str = "manual",
    owner_identity: str | None = None,
) -> int:
    """A pytest run row left ``running`` by the process ``owner_pid`` on ``host``."""
    run_id = store.create_run(
        tier=tier,
        trigger=trigger,
        kind="pytest",
        outcome=Outcome.RUNNING,
        host=host,
        owner_pid=owner_pid,
        owner_identity=owner_identity,
    )
    assert run_id is not None
    return run_id


def test_passing_run_is_recorded_with_counts(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A passing fake run ends passed with the plugin counts and emits queued/started/finished."""
    events: list[Event] = []
    behaviour = FakeBehaviour(tests=[("a::x", "passed"), ("a::y", "skipped")])
    d = fake_dispatcher(make_config(), FakeRunner(always(behaviour)), events=events)
    record = d.run(RunRequest("hourly"))
    assert record.outcome is Outcome.PASSED
    assert record.counts["passed"] == 1 and record.counts["skipped"] == 1
    assert [type(e) for e in events] == [RunQueued, RunStarted, RunFinished]
    assert [t.nodeid for t in d.store.test_results_for(record.id)] == ["a::x", "a::y"]


def test_row_exists_before_the_runner_starts(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """While the runner runs, the run row already exists as running."""
    seen: list[Outcome] = []

    def handler(spec: RunSpec) -> FakeBehaviour:
        seen.append(store.get_run(int(spec.run_id)).outcome)
        return FakeBehaviour()

    config = make_config()
    d = fake_dispatcher(config, FakeRunner(handler))
    store = d.store
    d.run(RunRequest("hourly"))
    assert seen == [Outcome.RUNNING]


def test_unknown_tier_writes_nothing(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """An unknown tier raises before any row is written."""
    d = fake_dispatcher(make_config(), FakeRunner())
    with pytest.raises(UnknownTierError):
        d.run(RunRequest("nightly"))
    assert d.store.list_runs() == []


def test_overlapping_fire_is_recorded_as_skipped(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A second run of a busy tier becomes a skipped-overlap row naming the running run."""
    release = threading.Event()

    def busy_until_released(_spec: RunSpec) -> FakeBehaviour:
        release.wait(60)
        return FakeBehaviour()

    d = fake_dispatcher(make_config(), FakeRunner(busy_until_released))
    first: dict[str, object] = {}
    worker = threading.Thread(target=lambda: first.setdefault("r", d.run(RunRequest("hourly"))))
    worker.start()
    try:
        running_id = wait_for(d.active_run_ids, 30, "the first run to be active")[0]
        skipped = d.run(RunRequest("hourly", trigger="schedule"))
    finally:
        release.set()
        worker.join(60)
    assert skipped.outcome is Outcome.SKIPPED_OVERLAP
    assert f"already running as run {running_id}" in skipped.reason


def test_same_slot_runs_once(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Two fires for the same tier@slot produce one row."""
    runner = FakeRunner()
    d = fake_dispatcher(make_config(), runner)
    slot = datetime(2026, 11, 27, 1, 15, tzinfo=timezone.utc)
    a = d.run(RunRequest("hourly", trigger="schedule", slot=slot))
    b = d.run(RunRequest("hourly", trigger="schedule", slot=slot))
    assert a.id == b.id and len(runner.specs) == 1


class Exploding(FakeRunner):
    alias = "local"

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        raise RuntimeError("kaboom")


def test_crash_in_runner_leaves_a_record(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A bug that raises mid-run still leaves a final infra-error row naming it."""
    d = fake_dispatcher(make_config(), Exploding())
    record = d.run(RunRequest("hourly"))
    assert record.outcome is Outcome.INFRA_ERROR
    assert "RuntimeError: kaboom" in record.reason


def test_cancel_records_reason(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Cancelling a run ends it as cancelled with the given reason."""
    started = threading.Event()

    def long_run(_spec: RunSpec) -> FakeBehaviour:
        started.set()
        return FakeBehaviour(duration_s=30)

    d = fake_dispatcher(make_config(), FakeRunner(long_run))
    result: dict[str, RunRecord] = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", d.run(RunRequest("hourly"))))
    worker.start()
    assert started.wait(30), "the runner never started"
    assert d.cancel(d.active_run_ids()[0], "operator said stop")
    worker.join(60)
    record = result["r"]
    assert record.outcome is Outcome.CANCELLED and record.reason == "operator said stop"


def test_recover_marks_dead_owner_runs_interrupted(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Runs left running by a dead process become interrupted; live owners are left alone."""
    config = make_config()
    d = fake_dispatcher(config, FakeRunner())
    dead = running_row(d.store, "hourly", d.host, 2**22 + 12345, trigger="schedule")
    live = running_row(d.store, "daily", d.host, os.getpid())
    d.store.acquire_leases(dead, "hourly", [(0, "GPU-0")])
    events: list[Event] = []
    d.add_listener(events.append)
    assert d.recover() == [dead]
    assert d.store.get_run(dead).outcome is Outcome.INTERRUPTED
    assert d.store.get_run(live).outcome is Outcome.RUNNING
    assert d.store.active_leases() == []
    assert any(isinstance(e, RunFinished) and e.run_id == dead for e in events)


def test_listener_errors_never_fail_a_run(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A listener that raises is logged, and the run still passes."""

    def broken(_event: Event) -> None:
        raise ValueError("listener bug")

    d = fake_dispatcher(make_config(), FakeRunner())
    d.add_listener(broken)
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED


def test_timeout_override_reaches_the_runner(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """--timeout overrides the tier's timeout in the spec; markers override too."""
    runner = FakeRunner(always(FakeBehaviour(duration_s=5)))
    d = fake_dispatcher(make_config(), runner)
    record = d.run(RunRequest("hourly", timeout_s=0.3, markers="daily"))
    assert record.outcome is Outcome.TIMEOUT
    assert runner.specs[0].timeout_s == 0.3
    argv = list(runner.specs[0].argv)
    assert argv[argv.index("-m", 3) + 1] == "daily"


def test_infra_termination_is_infra_error(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A runner that cannot start the run gives infra-error with its message."""
    behaviour = FakeBehaviour(termination=Termination.INFRA, message="image x:y not found")
    d = fake_dispatcher(make_config(), FakeRunner(always(behaviour)))
    record = d.run(RunRequest("hourly"))
    assert (record.outcome, record.reason) == (Outcome.INFRA_ERROR, "image x:y not found")


def test_gpu_tier_without_pool_is_gpu_unavailable(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A tier needing GPUs on a host with no GPU pool ends gpu-unavailable, not failed."""
    from tests.conftest import tier

    config = make_config(tiers={"hourly": tier(gpus=1)})
    d = fake_dispatcher(config, FakeRunner())
    record = d.run(RunRequest("hourly"))
    assert record.outcome is Outcome.GPU_UNAVAILABLE


def test_recover_sees_through_a_reused_pid(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A run whose owner pid now belongs to another process (restart, reboot) is interrupted."""
    config = make_config()
    d = fake_dispatcher(config, FakeRunner())
    reused = running_row(
        d.store,
        "hourly",
        d.host,
        os.getpid(),
        trigger="schedule",
        owner_identity="another-boot:12345",
    )
    mine = running_row(d.store, "daily", d.host, os.getpid(), owner_identity=d.identity)
    assert d.identity
    assert d.recover() == [reused]
    assert d.store.get_run(mine).outcome is Outcome.RUNNING
    assert d.run(RunRequest("hourly")).outcome is Outcome.PASSED  # the tier is not "busy"


def test_simultaneous_fires_of_a_tier_record_one_run(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Eight threads recording the same tier at once: one queued run, seven skipped-overlap."""
    d = fake_dispatcher(make_config(), FakeRunner())
    barrier = threading.Barrier(8)
    ids: list[int | None] = []

    def fire() -> None:
        barrier.wait()
        ids.append(d.record(RunRequest("hourly", trigger="schedule")))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(d.store.get_run(i).outcome.value for i in ids if i is not None)
    assert outcomes == ["queued"] + ["skipped-overlap"] * 7


def test_store_allows_one_active_run_per_tier_across_processes(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """Another process's live active row makes this dispatcher skip, via the store's index."""
    from scheduler.store.engine import ActiveRunExists

    config = make_config()
    d = fake_dispatcher(config, FakeRunner())
    other = Store(config.db_path)
    running_row(other, "hourly", "elsewhere", 1)
    with pytest.raises(ActiveRunExists):
        other.create_run(tier="hourly", trigger="manual", kind="pytest")
    record = d.run(RunRequest("hourly"))
    assert record.outcome is Outcome.SKIPPED_OVERLAP
    assert "already has an active run" in record.reason


@pytest.mark.parametrize("timeout", [0.0, -3.0])
def test_non_positive_timeout_is_a_usage_error(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher, timeout: float
) -> None:
    """A zero or negative timeout override is refused before anything is recorded."""
    from scheduler.kernel.errors import UsageError

    d = fake_dispatcher(make_config(), FakeRunner())
    with pytest.raises(UsageError, match="timeout must be a positive number"):
        d.run(RunRequest("hourly", timeout_s=timeout))
    assert d.store.list_runs() == []


class VanishingRefSource:
    """Resolves a ref at validation, then cannot find it at checkout (deleted upstream)."""

    def resolve(self, ref: str | None) -> str | None:
        return "a" * 40

    def checkout(self, ref: str | None, run_id: str) -> object:
        from scheduler.kernel.errors import UnknownRefError

        raise UnknownRefError(ref or "", "the mirror")

    def release(self, checkout: object, *, keep: bool) -> None:
        raise AssertionError("nothing was checked out")

    def changes_between(self, old_sha: str, new_sha: str, limit: int = 50) -> list[str]:
        return []


def test_ref_vanishing_after_validation_is_infra(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """A ref gone between validation and checkout ends infra-error naming it, not a crash."""
    d = fake_dispatcher(make_config(), source=VanishingRefSource())
    record = d.run(RunRequest("hourly", ref="feature-x"))
    assert record.outcome is Outcome.INFRA_ERROR
    assert "feature-x" in record.reason and "crashed" not in record.reason


def test_gpu_leftovers_are_split_into_leaked_and_foreign(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher, tmp_path: Path
) -> None:
    """After a GPU run, the processes on its GPU that its runner owns are leaks; others foreign."""
    import json

    from scheduler.gpu import build_pool
    from tests.conftest import tier

    gpu_file = tmp_path / "gpus.json"
    gpu = {
        "index": 0,
        "uuid": "GPU-a",
        "name": "Fake",
        "memory_total_mib": 80000,
        "memory_used_mib": 0,
        "utilization_pct": 0,
        "processes": [],
    }
    gpu_file.write_text(json.dumps([gpu]))
    config = make_config(
        tiers={"hourly": tier(gpus=1)}, gpu={"free_samples": 1, "sample_interval": 0.05, "wait": 5}
    )
    store = Store(config.db_path)

    def handler(spec: RunSpec) -> FakeBehaviour:
        procs = [{"pid": 31337, "used_memory_mib": 900}, {"pid": 4242, "used_memory_mib": 10}]
        gpu_file.write_text(json.dumps([{**gpu, "processes": procs}]))
        return FakeBehaviour(pids=(31337,))  # the fake's bookkeeping: owns() says it is the run's

    pool = build_pool(config, store, environ={"SCHEDCTL_FAKE_GPUS": str(gpu_file)})
    d = fake_dispatcher(config, FakeRunner(handler), store=store, gpu_pool=pool)
    record = d.run(RunRequest("hourly"))
    assert record.outcome is Outcome.PASSED
    assert [p["pid"] for p in record.details["leaked_gpu_processes"]] == [31337]
    assert [p["pid"] for p in record.details["foreign_gpu_processes"]] == [4242]
