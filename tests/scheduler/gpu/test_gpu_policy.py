"""The availability policy: one verdict per GPU with readable reasons."""

from __future__ import annotations

from typing import Any

from scheduler.gpu import GpuVerdict, LeaseHolder, evaluate
from scheduler.gpu.fake import host_from_json
from scheduler.gpu.probe import HostGpuInfo
from tests.scheduler.gpu.gpu_helpers import FOREIGN_PID, busy_gpu, fast_policy, gpu


def host(*entries: dict[str, Any]) -> HostGpuInfo:
    """A snapshot built from fake GPU entries."""
    return host_from_json({"gpus": list(entries)})


class TestEvaluate:
    def test_idle_gpus_are_free(self) -> None:
        """Idle GPUs are free with no reasons, in index order."""
        verdicts = evaluate(host(gpu(0), gpu(1)), fast_policy())
        assert verdicts == [GpuVerdict(0, "GPU-fake-0", True), GpuVerdict(1, "GPU-fake-1", True)]

    def test_busy_gpu_lists_every_reason(self) -> None:
        """A training job: foreign process, memory and utilisation each give a reason."""
        (verdict,) = evaluate(host(busy_gpu(0)), fast_policy())
        assert not verdict.free
        assert verdict.reasons == (
            f"foreign process pid {FOREIGN_PID} (8000 MiB)",
            "memory used 8000 MiB > 1024 MiB",
            "utilization 97% > 10%",
        )
        assert verdict.describe().startswith(f"gpu0: foreign process pid {FOREIGN_PID}")

    def test_thresholds_are_exclusive_limits(self) -> None:
        """Exactly at the limits is still free; one above is busy."""
        policy = fast_policy(max_memory_used_mib=2000, max_utilization_pct=20)
        at, above = evaluate(host(gpu(0, used=2000, util=20), gpu(1, used=2001, util=21)), policy)
        assert at.free
        assert above.reasons == ("memory used 2001 MiB > 2000 MiB", "utilization 21% > 20%")

    def test_foreign_processes_can_be_tolerated(self) -> None:
        """With foreign_processes_busy off, a small process alone does not make a GPU busy."""
        small = gpu(0, used=300, procs=((99, 300),))
        assert not evaluate(host(small), fast_policy())[0].free
        assert evaluate(host(small), fast_policy(foreign_processes_busy=False))[0].free

    def test_own_processes_are_not_foreign(self) -> None:
        """A pid in own_pids does not count as foreign."""
        mine = gpu(0, used=300, procs=((99, 300),))
        assert evaluate(host(mine), fast_policy(), own_pids={99})[0].free

    def test_unknown_process_memory(self) -> None:
        """A process whose memory the driver cannot attribute still reads clearly."""
        entry = gpu(0)
        entry["processes"] = [{"pid": 7, "used_memory_mib": None}]
        assert evaluate(host(entry), fast_policy())[0].reasons == (
            "foreign process pid 7 (unknown)",
        )

    def test_unsupported_utilization_is_ignored(self) -> None:
        """A GPU that cannot report utilisation is judged on the other readings."""
        assert evaluate(host(gpu(0, util=None)), fast_policy())[0].free

    def test_exclusion_by_index_and_uuid(self) -> None:
        """gpu.exclude takes indices (int or digit string) and UUIDs."""
        policy = fast_policy(exclude=[0, "GPU-fake-2", "3"])
        verdicts = evaluate(host(gpu(0), gpu(1), gpu(2), gpu(3)), policy)
        assert [v.free for v in verdicts] == [False, True, False, False]
        assert verdicts[0].reasons == ("excluded by gpu.exclude",)

    def test_lease_holder_makes_busy(self) -> None:
        """A GPU leased to a run is busy for everyone else, naming the run and tier."""
        leases = {"GPU-fake-1": LeaseHolder(12, "daily")}
        _, leased = evaluate(host(gpu(0), gpu(1)), fast_policy(), leases=leases)
        assert leased.describe() == "gpu1: leased to run 12 (daily)"
