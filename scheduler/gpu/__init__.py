"""GPU awareness: NVML probe, availability policy, leases across tiers, provenance.

Typical use by the dispatcher::

    pool = build_pool(config, store)        # fake backend when SCHEDCTL_FAKE_GPUS is set
    try:
        lease = pool.acquire(run_id, tier, tier_cfg.gpus, config.tier_priority(tier),
                             config.gpu.wait, cancel)
    except GpuWaitCancelled: ...            # -> outcome cancelled
    except GpuError: ...                    # -> outcome gpu-unavailable, str(exc) is the reason
    try:
        store.update_run(run_id, **lease.provenance())
        ... runner.run(RunSpec(..., gpus=lease.devices)) ...
        leaked = pool.leaked_processes(lease)   # may raise GpuError: record "not checked"
    finally:
        pool.release(run_id)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.gpu.fake import ENV_VAR, FakeProbe, write_fake_gpus
    from scheduler.gpu.lease import GpuWaitCancelled, GpuWaitTimeout, Lease, leaked_processes
    from scheduler.gpu.nvml import NvmlProbe, translate_nvml_errors
    from scheduler.gpu.policy import GpuVerdict, LeaseHolder, evaluate, is_excluded
    from scheduler.gpu.pool import GpuCount, GpuPool, LeaseStore, build_pool, lease_holders
    from scheduler.gpu.probe import GpuProbe, GpuProcess, GpuSnapshot, HostGpuInfo
    from scheduler.gpu.timed import TimedProbe, build_probe, probe_from_env

# Each name is imported from its module on first use: `from scheduler.gpu.fake import ENV_VAR`
# (the metrics, the web pages) loads neither NVML nor the pool on a host without GPU tiers.
_HOMES: dict[str, str] = {
    "ENV_VAR": "fake",
    "FakeProbe": "fake",
    "GpuCount": "pool",
    "GpuPool": "pool",
    "GpuProbe": "probe",
    "GpuProcess": "probe",
    "GpuSnapshot": "probe",
    "GpuVerdict": "policy",
    "GpuWaitCancelled": "lease",
    "GpuWaitTimeout": "lease",
    "HostGpuInfo": "probe",
    "Lease": "lease",
    "LeaseHolder": "policy",
    "LeaseStore": "pool",
    "NvmlProbe": "nvml",
    "TimedProbe": "timed",
    "build_pool": "pool",
    "build_probe": "timed",
    "evaluate": "policy",
    "is_excluded": "policy",
    "leaked_processes": "lease",
    "lease_holders": "pool",
    "probe_from_env": "timed",
    "translate_nvml_errors": "nvml",
    "write_fake_gpus": "fake",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ENV_VAR",
    "FakeProbe",
    "GpuCount",
    "GpuPool",
    "GpuProbe",
    "GpuProcess",
    "GpuSnapshot",
    "GpuVerdict",
    "GpuWaitCancelled",
    "GpuWaitTimeout",
    "HostGpuInfo",
    "Lease",
    "LeaseHolder",
    "LeaseStore",
    "NvmlProbe",
    "TimedProbe",
    "build_pool",
    "build_probe",
    "evaluate",
    "is_excluded",
    "leaked_processes",
    "lease_holders",
    "probe_from_env",
    "translate_nvml_errors",
    "write_fake_gpus",
]
