"""The Overview's GPU strip: each GPU free, leased (to which run) or drained (and why)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from scheduler.config import Config
from scheduler.gpu.fake import ENV_VAR as FAKE_GPUS_ENV
from scheduler.store.engine import Store
from scheduler.web.pages import GpuCell

if TYPE_CHECKING:  # the probe and the pool are imported only when GPUs matter here
    from scheduler.gpu import GpuProbe

PROBE_TIMEOUT_S = 2.0


def gpu_cells(probe: GpuProbe, store: Store) -> list[GpuCell]:
    """One cell per GPU the probe sees; raises the probe's :class:`GpuError` when it cannot."""
    from scheduler.gpu import lease_holders

    info = probe.snapshot()
    leases = lease_holders(store)
    drains = {str(d["gpu_uuid"]): d for d in store.drained_gpus()}
    cells = []
    for gpu in info.gpus:
        used = f"{gpu.memory_used_mib}/{gpu.memory_total_mib} MiB"
        if gpu.uuid in drains:
            cells.append(GpuCell(gpu.index, gpu.name, "drained", str(drains[gpu.uuid]["reason"])))
        elif gpu.uuid in leases:
            holder = leases[gpu.uuid]
            cells.append(GpuCell(gpu.index, gpu.name, "leased", f"run {holder.run_id} "
                                 f"({holder.tier}), {used}"))  # fmt: skip
        else:
            cells.append(GpuCell(gpu.index, gpu.name, "free", used))
    return cells


def gpu_source(
    config: Config | None, store: Store, environ: Mapping[str, str] | None = None
) -> Callable[[], Sequence[GpuCell]] | None:
    """The strip's reader when NVML matters here (a tier asks for GPUs, or a fake GPU file is
    set), else ``None`` (no strip, and NVML is never loaded)."""
    environ = os.environ if environ is None else environ
    wants = bool(environ.get(FAKE_GPUS_ENV)) or (
        config is not None and any(t.gpus for t in config.tiers.values())
    )
    if not wants:
        return None
    from scheduler.gpu import build_probe

    probe = build_probe(PROBE_TIMEOUT_S, environ)
    return lambda: gpu_cells(probe, store)
