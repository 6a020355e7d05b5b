"""``schedctl daemon`` (run the scheduler in the foreground) and ``schedctl status``."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import click
from rich.table import Table

from scheduler.assembly import build_dispatcher, build_services
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_time, styled
from scheduler.cli.schedule_cmd import upcoming
from scheduler.daemon import Daemon, StateLock, wait_for_signal
from scheduler.logs import configure


@click.command("daemon")
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.pass_obj
def daemon_command(app: AppContext, log_format: str) -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT."""
    configure(json_logs=log_format == "json", level="info")
    config = app.config
    dispatcher = build_dispatcher(config, app.store)
    daemon = Daemon(config, app.store, dispatcher, build_services(config, app.store, dispatcher))
    daemon.start()
    stop = threading.Event()
    try:
        wait_for_signal(stop)
    finally:
        daemon.stop()


def status_payload(app: AppContext) -> dict[str, Any]:
    config = app.config
    store = app.store
    holder = StateLock.holder(config.state_dir)
    nexts: dict[str, Any] = {
        str(row["tier"]): row["next"] for row in upcoming(config, datetime.now(timezone.utc), 1)
    }
    tiers = []
    for name in config.tiers:
        last = store.last_run(name)
        tiers.append(
            {
                "tier": name,
                "schedule": config.tiers[name].schedule,
                "last_run_id": last.id if last else None,
                "last_outcome": last.outcome.value if last else None,
                "last_finished_at": last.finished_at.isoformat()
                if last and last.finished_at
                else None,
                "consecutive_failures": store.consecutive_failures(name),
                "next": (nexts.get(name) or [None])[0],
            }
        )
    return {
        "daemon": {"running": holder is not None, "pid": holder},
        "tiers": tiers,
        "active_runs": [r.to_json() for r in store.active_runs()],
        "gpu_leases": store.active_leases(),
    }


@click.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status_command(app: AppContext, as_json: bool) -> None:
    """Daemon, tiers (last outcome, next fire), runs in progress, GPU leases."""
    payload = status_payload(app)
    if as_json:
        emit_json(payload)
        return
    out = console()
    daemon = payload["daemon"]
    out.print(
        f"daemon: [green]running[/green] (pid {daemon['pid']})"
        if daemon["running"]
        else "daemon: [yellow]not running[/yellow]"
    )
    table = Table("tier", "schedule", "last", "failures in a row", "next (UTC)")
    store = app.store
    for row in payload["tiers"]:
        last = store.get_run(row["last_run_id"]) if row["last_run_id"] else None
        table.add_row(
            row["tier"],
            row["schedule"] or "manual",
            f"{styled(last.outcome)} #{last.id} {fmt_time(last.finished_at)}" if last else "-",
            str(row["consecutive_failures"]),
            row["next"] or "-",
        )
    out.print(table)
    for run in payload["active_runs"]:
        out.print(
            f"active: run {run['id']} {run['tier']} {run['outcome']} since {run['queued_at']}"
        )
    for lease in payload["gpu_leases"]:
        out.print(
            f"gpu {lease['gpu_index']} ({lease['gpu_uuid']}) leased to run {lease['run_id']}"
            f" ({lease['tier']})"
        )
