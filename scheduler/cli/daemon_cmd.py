"""``schedctl status`` and ``schedctl cancel RUN`` (``schedctl daemon`` is :mod:`.serve_cmd`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from scheduler.api.payloads import status_payload
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, line, styled
from scheduler.cli.schedule_cmd import upcoming
from scheduler.daemon.lock import StateLock
from scheduler.kernel.errors import DaemonError, UnknownRunError
from scheduler.kernel.outcome import Outcome

if TYPE_CHECKING:
    from rich.text import Text


def local_status(app: AppContext) -> dict[str, Any]:
    """Status without a daemon: next fires come from the cron expressions."""
    config = app.read_view
    nexts: dict[str, datetime | None] = {}
    for row in upcoming(config, datetime.now(timezone.utc), 1):
        times = row["next"]
        assert isinstance(times, list)
        nexts[str(row["tier"])] = datetime.fromisoformat(times[0]) if times else None
    pid = StateLock.holder(config.state_dir)
    info = {"running": pid is not None, "pid": pid, "reachable": False}
    return status_payload(config, app.reader, nexts, info)


def status_data(app: AppContext) -> dict[str, Any]:
    view = app.read_view
    if StateLock.holder(view.state_dir) is None:
        return local_status(app)  # no daemon: no HTTP client to import (http.client)
    from scheduler.api.client import daemon_client_at

    found = daemon_client_at(view.state_dir, view.api_socket, timeout=10)
    if found is None:
        return local_status(app)
    _pid, client = found
    try:
        payload = client.status()
    except DaemonError as exc:
        payload = local_status(app)
        payload["daemon"]["error"] = str(exc)
        return payload
    payload["daemon"]["reachable"] = True
    return payload


@click.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status_command(app: AppContext, as_json: bool) -> None:
    """Daemon, tiers (last outcome, next fire), runs in progress, GPU leases."""
    payload = status_data(app)
    if as_json:
        emit_json(payload)
        return
    from rich.table import Table

    out = console()
    out.print(_daemon_line(payload["daemon"]))
    table = Table("tier", "schedule", "last", "failures in a row", "next (UTC)")
    for row in payload["tiers"]:
        last = (
            line(
                styled(Outcome(row["last_outcome"])),
                f" #{row['last_run_id']} {row['last_finished_at'] or ''}".rstrip(),
            )
            if row["last_outcome"]
            else line("-")
        )
        table.add_row(
            line(row["tier"]),
            line(row["schedule"] or "manual"),
            last,
            line(row["consecutive_failures"]),
            line(row["next"]),
        )
    out.print(table)
    for run in payload["active_runs"]:
        out.print(
            line(
                f"active: run {run['id']} {run['tier']} {run['outcome']} ({run['trigger']}) "
                f"since {run['started_at'] or run['queued_at']}"
            )
        )
    for lease in payload["gpu_leases"]:
        out.print(
            line(
                f"gpu {lease['gpu_index']} ({lease['gpu_uuid']}) leased to run {lease['run_id']}"
                f" ({lease['tier']})"
            )
        )


def _daemon_line(daemon: dict[str, Any]) -> Text:
    if not daemon.get("running"):
        return line("daemon: ", ("not running", "yellow"))
    if not daemon.get("reachable"):
        why = daemon.get("error") or "its API socket is missing"
        return line(
            "daemon: ", (f"running (pid {daemon['pid']}) but not reachable", "yellow"), ": ", why
        )
    uptime = int(daemon.get("uptime_s") or 0)
    hours, rest = divmod(uptime, 3600)
    return line(
        "daemon: ",
        ("running", "green"),
        f" (pid {daemon['pid']}, up {hours}h{rest // 60:02d}m, version {daemon.get('version')})",
    )


@click.command("cancel")
@click.argument("run_id")
@click.option("--reason", help="Recorded as the run's reason.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cancel_command(app: AppContext, run_id: str, reason: str | None, as_json: bool) -> None:
    """Cancel a run that the daemon is running (its row records the reason)."""
    if not run_id.isdigit():
        raise UnknownRunError(f"run id must be a number, got {run_id!r}")
    from scheduler.api.client import daemon_client

    found = daemon_client(app.config)
    if found is None:
        raise DaemonError(
            f"no schedctl daemon runs on {app.config.state_dir}; only the daemon's runs can be "
            "cancelled (stop a foreground `schedctl run` with Ctrl-C)"
        )
    pid, client = found
    result = client.cancel(int(run_id), reason or f"cancelled with schedctl cancel (daemon {pid})")
    if as_json:
        emit_json(result)
    else:
        click.echo(f"cancelling run {run_id} in daemon pid {pid}: {result['reason']}")
