"""A GPU probe backed by a JSON file, for tests and demos (``SCHEDCTL_FAKE_GPUS=path.json``).

The file is re-read on every snapshot, so a test can change it while a run waits. Write it
atomically (temp file + ``os.replace``): a half-written file is a transient :class:`GpuError`.
Either a list of GPUs, or an object with ``gpus`` and optional keys::

    [{"index": 0, "uuid": "GPU-0", "name": "Fake H100", "memory_total_mib": 81559,
      "memory_used_mib": 0, "utilization_pct": 0, "temperature_c": 35,
      "processes": [{"pid": 4242, "used_memory_mib": 8000}]}]

    {"driver_version": "550.54.15", "cuda_version": "12.4", "delay_s": 0.2,
     "unavailable": "why NVML is absent", "lost": "why a GPU is lost", "gpus": [...]}

Faults for the health check (:meth:`FakeProbe.health`), per GPU entry: ``"xids": [79]`` (every
Xid the driver ever reported; each is delivered once, as NVML's event set does, so append to
inject a new one), ``"ecc_uncorrectable": 2`` (volatile count), ``"retired_pages_pending": true``,
``"row_remap_failure": true`` and ``"lost": true`` (the GPU no longer answers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scheduler.gpu.probe import GpuHealth, GpuProcess, GpuSnapshot, HostGpuInfo
from scheduler.kernel.errors import GpuError, GpuLost, NvmlUnavailable

__all__ = ["ENV_VAR", "FakeProbe", "host_from_json", "write_fake_gpus"]

ENV_VAR = "SCHEDCTL_FAKE_GPUS"
FAKE_DRIVER = "fake"
FAKE_CUDA = "fake"


class FakeProbe:
    """Reports the GPUs described in a JSON file. Plugin alias: fake."""

    def __init__(self, path: str | Path, sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = Path(path)
        self._sleep = sleep
        self._xids_seen: dict[str, int] = {}

    def snapshot(self) -> HostGpuInfo:
        data = self._load()
        if data.get("delay_s"):
            self._sleep(float(data["delay_s"]))
        if data.get("unavailable"):
            raise NvmlUnavailable(f"NVML unavailable: {data['unavailable']}")
        if data.get("lost"):
            raise GpuLost(f"GPU lost: {data['lost']}")
        return host_from_json(data, source=f"fake GPU file {self.path}")

    def health(self) -> tuple[GpuHealth, ...]:
        """The injected faults; Xids not delivered before are delivered now, once."""
        data = self._load()
        if data.get("unavailable"):
            raise NvmlUnavailable(f"NVML unavailable: {data['unavailable']}")
        out = []
        try:
            for item in sorted(data["gpus"], key=lambda g: int(g["index"])):
                uuid = str(item["uuid"])
                xids = [int(x) for x in item.get("xids", [])]
                seen = self._xids_seen.get(uuid, 0)
                self._xids_seen[uuid] = len(xids)
                ecc = item.get("ecc_uncorrectable")
                out.append(
                    GpuHealth(
                        index=int(item["index"]),
                        uuid=uuid,
                        xids=tuple(xids[seen:]),
                        ecc_uncorrectable=None if ecc is None else int(ecc),
                        retired_pages_pending=_flag(item.get("retired_pages_pending")),
                        row_remap_failure=_flag(item.get("row_remap_failure")),
                        lost=bool(item.get("lost", False)),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise GpuError(f"fake GPU file {self.path}: bad GPU entry: {exc!r}") from None
        return tuple(out)

    def close(self) -> None:
        """Nothing to release."""

    def _load(self) -> Mapping[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise NvmlUnavailable(
                f"NVML unavailable: fake GPU file {self.path} does not exist"
            ) from None
        except OSError as exc:
            raise GpuError(f"fake GPU file {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GpuError(f"fake GPU file {self.path}: invalid JSON: {exc}") from None
        if isinstance(data, list):
            return {"gpus": data}
        if isinstance(data, dict) and isinstance(data.get("gpus", []), list):
            return {"gpus": [], **data}
        raise GpuError(
            f"fake GPU file {self.path}: expected a list of GPUs or an object with 'gpus'"
        )


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def host_from_json(data: Mapping[str, Any], source: str = "fake GPUs") -> HostGpuInfo:
    """A snapshot from the object form (``{"gpus": [...], "driver_version": ...}``)."""
    try:
        gpus = tuple(sorted((_gpu(item) for item in data["gpus"]), key=lambda g: g.index))
    except (KeyError, TypeError, ValueError) as exc:
        raise GpuError(f"{source}: bad GPU entry: {exc!r}") from None
    return HostGpuInfo(
        driver_version=str(data.get("driver_version", FAKE_DRIVER)),
        cuda_version=str(data.get("cuda_version", FAKE_CUDA)),
        gpus=gpus,
    )


def _gpu(item: Mapping[str, Any]) -> GpuSnapshot:
    temperature = item.get("temperature_c")
    utilization = item.get("utilization_pct", 0)
    return GpuSnapshot(
        index=int(item["index"]),
        uuid=str(item["uuid"]),
        name=str(item.get("name", "Fake GPU")),
        memory_total_mib=int(item["memory_total_mib"]),
        memory_used_mib=int(item.get("memory_used_mib", 0)),
        utilization_pct=None if utilization is None else int(utilization),
        temperature_c=None if temperature is None else int(temperature),
        processes=tuple(
            GpuProcess(
                pid=int(p["pid"]),
                used_memory_mib=None
                if p.get("used_memory_mib") is None
                else int(p["used_memory_mib"]),
            )
            for p in item.get("processes", [])
        ),
    )


def write_fake_gpus(path: str | Path, gpus: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Atomically (re)write a fake GPU file, so a concurrent snapshot never reads half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(gpus))
    tmp.replace(path)
