"""``schedctl gpus [--json]``: each GPU's readings, the policy's verdict, who holds a lease and
which GPUs the health check drained; ``schedctl gpus undrain GPU`` lets a drained GPU be leased
again.

One sample, so ``gpu.free_samples`` does not apply here; the health check itself runs in the
daemon before each lease (reading Xid events consumes them, so this command only shows drains).
A host without an NVIDIA driver is a normal state: exit 0, no GPUs and the reason. A lost GPU or
another NVML failure exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.table import Table

from scheduler.cli.output import console, line
from scheduler.config import GpuPolicy
from scheduler.gpu import GpuProbe, LeaseHolder, build_probe, evaluate, lease_holders
from scheduler.kernel.errors import GpuError, NvmlUnavailable, SchedctlError, UsageError
from scheduler.kernel.events import GpuUndrained

__all__ = ["gpus_command", "gpus_report"]


def gpus_report(
    probe: GpuProbe,
    policy: GpuPolicy,
    leases: Mapping[str, LeaseHolder],
    drains: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], int]:
    """The ``--json`` document and the exit code."""
    drained = {str(row["gpu_uuid"]): _drain_json(row) for row in drains}
    try:
        host = probe.snapshot()
    except GpuError as exc:
        code = 0 if isinstance(exc, NvmlUnavailable) else 1
        empty: dict[str, Any] = {"gpus": [], "driver_version": None, "cuda_version": None}
        return {**empty, "reason": str(exc), "drains": list(drained.values())}, code
    verdicts = {v.uuid: v for v in evaluate(host, policy, leases=leases)}
    gpus = []
    for gpu in host.gpus:
        holder = leases.get(gpu.uuid)
        drain = drained.get(gpu.uuid)
        reasons = list(verdicts[gpu.uuid].reasons)
        if drain is not None:
            reasons.insert(0, f"drained: {drain['code']}: {drain['reason']}")
        gpus.append(
            {
                **gpu.to_json(),
                "free": verdicts[gpu.uuid].free and drain is None,
                "reasons": reasons,
                "lease": None if holder is None else {"run_id": holder.run_id, "tier": holder.tier},
                "drain": drain,
            }
        )
    reason = None if host.gpus else "NVML reports no GPUs on this host"
    report = {
        "gpus": gpus,
        "driver_version": host.driver_version,
        "cuda_version": host.cuda_version,
        "reason": reason,
        "drains": list(drained.values()),
    }
    return report, 0


def _drain_json(row: Mapping[str, Any]) -> dict[str, Any]:
    drained_at = row.get("drained_at")
    return {
        "gpu": "host" if int(row["gpu_index"]) < 0 else int(row["gpu_index"]),
        "uuid": str(row["gpu_uuid"]),
        "code": str(row["code"]),
        "reason": str(row["reason"]),
        "clears": bool(row["clears"]),
        "drained_at": drained_at.isoformat() if drained_at is not None else None,
    }


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
            line(_state(gpu)),
        )
    return table


def _state(gpu: Mapping[str, Any]) -> tuple[str, str]:
    if gpu.get("drain"):
        return ("drained", "bold red")
    return ("free", "green") if gpu["free"] else ("busy", "red")


def _verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per GPU with its UUID and why it is busy; too long for a table cell."""
    return [
        f"gpu{g['index']} {g['uuid']}: " + ("free" if g["free"] else "; ".join(g["reasons"]))
        for g in report["gpus"]
    ]


@click.group("gpus", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def gpus_command(ctx: click.Context, as_json: bool) -> None:
    """Show each GPU, whether the policy finds it free, which run holds it, and drains."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.obj
    policy: GpuPolicy = app.config.gpu
    store = getattr(app, "store", None)
    leases = lease_holders(store) if store is not None else {}
    drains = store.drained_gpus() if store is not None else []
    probe = build_probe(policy.poll_timeout)
    try:
        report, code = gpus_report(probe, policy, leases, drains)
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
    if report["reason"] and not report["gpus"]:
        for drain in report["drains"]:
            click.echo(line(f"drained: {drain['uuid']}: {drain['code']}: {drain['reason']}"))
    host = [d for d in report["drains"] if d["gpu"] == "host"]
    if host and not as_json:
        click.echo(line(f"host: {host[0]['code']}: {host[0]['reason']}"))
    if code:
        raise click.exceptions.Exit(code)


@gpus_command.command("undrain")
@click.argument("gpu")
@click.pass_obj
def undrain_command(app: Any, gpu: str) -> None:
    """Let drained GPU (index, UUID or 'host') be leased again."""
    store = app.store
    row = store.undrain_gpu(gpu)
    if row is None:
        drained = ", ".join(f"{d['gpu_index']} ({d['gpu_uuid']})" for d in store.drained_gpus())
        raise UsageError(f"GPU {gpu!r} is not drained (drained: {drained or 'none'})")
    index = int(row["gpu_index"])
    click.echo(line(f"undrained {row['gpu_uuid']} (was {row['code']}: {row['reason']})"))
    _resolve_alert(app, GpuUndrained(index, str(row["gpu_uuid"]), "schedctl gpus undrain"))


def _resolve_alert(app: Any, event: GpuUndrained) -> None:
    """Queue the drain alert's resolve; the daemon's delivery worker sends it."""
    from scheduler.alerts import build_alerting

    try:
        alerting = build_alerting(app.config, app.store)
    except SchedctlError as exc:
        click.echo(f"warning: drain alert not resolved: {exc}", err=True)
        return
    if alerting is not None:
        alerting.recorder.record_drain(event)
