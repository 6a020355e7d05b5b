"""``schedctl alerts``: recent alerts and pending deliveries; ``schedctl alerts test SINK``."""

from __future__ import annotations

from typing import Any

import click
import requests
from rich.table import Column, Table

from scheduler.alerts.build import SinkSet, build_sinks
from scheduler.alerts.payload import sample_alert
from scheduler.alerts.status import overview
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, line
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import AlertError, UsageError


def _sinks(app: AppContext, session: requests.Session) -> SinkSet:
    config = app.config
    return build_sinks(
        config.alerts, session=session, source=str(config.source_file or "config.yaml")
    )


@click.group("alerts", invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts_group(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent alerts per tier and failure class, and deliveries not yet sent."""
    if ctx.invoked_subcommand is not None:
        return
    app: AppContext = ctx.obj
    with requests.Session() as session:
        data = overview(app.store, _sinks(app, session), limit)
    if as_json:
        emit_json(data)
        return
    _print_overview(data)


def _print_overview(data: dict[str, Any]) -> None:
    out = console()
    for sink in data["sinks"]:
        name = (sink["name"], "bold")
        if sink["enabled"]:
            out.print(line("sink ", name, f" ({sink['kind']}): ", sink["target"]))
        else:
            out.print(line("sink ", name, ": ", ("disabled", "red"), ": ", sink["reason"]))
    if not data["sinks"]:
        out.print("no alert sinks configured (alerts: in config.yaml)")
    table = Table(
        Column("fingerprint", no_wrap=True), "state", "severity", "in a row", "last run", "updated"
    )
    for a in data["alerts"]:
        style = "red" if a["state"] == "firing" else "green"
        table.add_row(
            line(a["fingerprint"]),
            line((a["state"], style)),
            line(a["severity"]),
            line(a["consecutive"]),
            line(a["last_run_id"]),
            line(str(a["updated_at"])[:16].replace("T", " ")),
        )
    out.print(table)
    deliveries = data["deliveries"]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(deliveries["counts"].items())) or "none"
    out.print(line(f"deliveries: {counts}"))
    for label in ("pending", "dead"):
        for row in deliveries[label]:
            out.print(
                line(
                    f"  {label:<7} {row['id']}  attempts {row['attempts']}  ",
                    f"next {str(row['next_attempt_at'])[:19]}  {row['last_error'] or ''}",
                )
            )


@alerts_group.command("test")
@click.argument("sink")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def test_command(app: AppContext, sink: str, as_json: bool) -> None:
    """Send a test message to SINK (GitHub: only checks the token, opens no issue)."""
    with requests.Session() as session:
        sinks = _sinks(app, session)
        if sink in sinks.disabled:
            raise AlertError(f"sink {sink!r} is disabled: {sinks.disabled[sink]}")
        target = sinks.get(sink)
        if target is None:
            known = ", ".join(sinks.names) or "(none configured)"
            raise UsageError(f"unknown alert sink {sink!r}; configured sinks: {known}")
        alert = sample_alert(sink, created_at=utcnow(), public_url=app.config.alerts.public_url)
        result = target.send_test(alert)
    if as_json:
        emit_json({"sink": sink, "ok": True, "result": result})
    else:
        click.echo(result)
