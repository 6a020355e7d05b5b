"""``schedctl gpus [--json]``: each GPU's readings, the policy's verdict and who holds a lease.

One sample, so ``gpu.free_samples`` does not apply here. A host without an NVIDIA driver is a
normal state: exit 0, no GPUs and the reason. A lost GPU or another NVML failure exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click
from rich.table import Table

from scheduler.cli.output import console, line
from scheduler.config import GpuPolicy
from scheduler.gpu import GpuProbe, LeaseHolder, build_probe, evaluate, lease_holders
from scheduler.kernel.errors import GpuError, NvmlUnavailable

__all__ = ["gpus_command", "gpus_report"]


def gpus_report(
    probe: GpuProbe, policy: GpuPolicy, leases: Mapping[str, LeaseHolder]
) -> tuple[dict[str, Any], int]:
    """The ``--json`` document and the exit code."""
    try:
        host = probe.snapshot()
    except GpuError as exc:
        code = 0 if isinstance(exc, NvmlUnavailable) else 1
        empty: dict[str, Any] = {"gpus": [], "driver_version": None, "cuda_version": None}
        return {**empty, "reason": str(exc)}, code
    verdicts = {v.uuid: v for v in evaluate(host, policy, leases=leases)}
    gpus = []
    for gpu in host.gpus:
        holder = leases.get(gpu.uuid)
        gpus.append(
            {
                **gpu.to_json(),
                "free": verdicts[gpu.uuid].free,
                "reasons": list(verdicts[gpu.uuid].reasons),
                "lease": None if holder is None else {"run_id": holder.run_id, "tier": holder.tier},
            }
        )
    reason = None if host.gpus else "NVML reports no GPUs on this host"
    report = {
        "gpus": gpus,
        "driver_version": host.driver_version,
        "cuda_version": host.cuda_version,
        "reason": reason,
    }
    return report, 0


def _cell(value: object, unit: str = "") -> str:
    return "n/a" if value is None else f"{value}{unit}"


def _table(report: Mapping[str, Any]) -> Table:
    table = Table(
        title=line(
            f"driver {_cell(report['driver_version'])} · CUDA {_cell(report['cuda_version'])}"
        )
    )
    table.add_column("gpu", justify="right")
    for column in ("name", "memory", "util", "temp", "processes", "lease", "state"):
        table.add_column(column)
    for gpu in report["gpus"]:
        procs = ", ".join(
            f"{p['pid']} ({_cell(p['used_memory_mib'], ' MiB')})" for p in gpu["processes"]
        )
        lease = gpu["lease"]
        table.add_row(
            line(gpu["index"]),
            line(gpu["name"]),
            line(f"{gpu['memory_used_mib']}/{gpu['memory_total_mib']} MiB"),
            line(_cell(gpu["utilization_pct"], "%")),
            line(_cell(gpu["temperature_c"], "°C")),
            line(procs or "-"),
            line(None if lease is None else f"run {lease['run_id']} ({lease['tier']})"),
            line(("free", "green") if gpu["free"] else ("busy", "red")),
        )
    return table


def _verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per GPU with its UUID and why it is busy; too long for a table cell."""
    return [
        f"gpu{g['index']} {g['uuid']}: " + ("free" if g["free"] else "; ".join(g["reasons"]))
        for g in report["gpus"]
    ]


@click.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def gpus_command(app: Any, as_json: bool) -> None:
    """Show each GPU, whether the policy finds it free, and which run holds it."""
    policy: GpuPolicy = app.config.gpu
    store = getattr(app, "store", None)
    leases = lease_holders(store) if store is not None else {}
    probe = build_probe(policy.poll_timeout)
    try:
        report, code = gpus_report(probe, policy, leases)
    finally:
        probe.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif report["reason"] and not report["gpus"]:
        click.echo(f"no GPUs: {report['reason']}")
    else:
        out = console()
        out.print(_table(report))
        for verdict in _verdict_lines(report):
            out.print(line(verdict))
    if code:
        raise click.exceptions.Exit(code)
