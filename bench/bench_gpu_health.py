"""Pre-flight health check against real NVML: p50/p99 per GPU of one full check.

One check = the health read (Xid event set drained, ECC, retired pages, row remapping) plus the
snapshot the pool already takes, assessed by :func:`scheduler.gpu.health.assess`; the figure is
the check's time divided by the number of GPUs. Target: p99 <= 20 ms per GPU, and every GPU
healthy. Without NVML (no driver, no pynvml) it prints ``skipped: no NVML`` and exits 0: a fake
backend's numbers would say nothing about the driver.

    python bench/bench_gpu_health.py [--checks 300] [--json] [--strict]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.gpu.health import assess
from scheduler.gpu.nvml import NvmlProbe
from scheduler.kernel.errors import GpuError, NvmlUnavailable

TARGET_P99_MS_PER_GPU = 20.0


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def measure(checks: int) -> dict[str, Any]:
    probe = NvmlProbe()
    host = probe.snapshot()  # nvmlInit, handles, event registration are not part of a check
    baseline: dict[str, int] = {}
    _, baseline = assess(probe.health(), host, ecc_baseline=baseline, check_processes=False)
    per_gpu_ms: list[float] = []
    findings: list[str] = []
    count = max(1, len(host.gpus))
    for _ in range(checks):
        started = time.perf_counter()
        health = probe.health()
        snap = probe.snapshot()
        found, baseline = assess(health, snap, ecc_baseline=baseline, check_processes=False)
        per_gpu_ms.append((time.perf_counter() - started) * 1000 / count)
        findings += [f.describe() for f in found]
    probe.close()
    return {
        "gpus": [f"{g.index} {g.name} {g.uuid}" for g in host.gpus],
        "driver": host.driver_version,
        "checks": checks,
        "p50_ms_per_gpu": round(_percentile(per_gpu_ms, 50), 3),
        "p99_ms_per_gpu": round(_percentile(per_gpu_ms, 99), 3),
        "findings": sorted(set(findings)),
        "target_p99_ms_per_gpu": TARGET_P99_MS_PER_GPU,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    try:
        result = measure(args.checks)
    except NvmlUnavailable as exc:
        print(f"skipped: no NVML ({exc})")
        return 0
    except GpuError as exc:
        print(f"error: {exc}")
        return 1
    ok = result["p99_ms_per_gpu"] <= TARGET_P99_MS_PER_GPU and not result["findings"]
    if args.json:
        print(json.dumps({**result, "ok": ok}, indent=2))
    else:
        print(f"GPUs: {', '.join(result['gpus']) or 'none'} (driver {result['driver']})")
        print(
            f"pre-flight check p99 {result['p99_ms_per_gpu']:.3f} ms/GPU "
            f"(p50 {result['p50_ms_per_gpu']:.3f}; baseline: none, first measurement) "
            f"target <= {TARGET_P99_MS_PER_GPU:g} ms: {'OK' if ok else 'MISSED'}"
        )
        print("findings: " + ("; ".join(result["findings"]) or "none (healthy)"))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
