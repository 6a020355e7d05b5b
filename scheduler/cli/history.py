"""``schedctl runs``, ``schedctl show RUN`` and ``schedctl logs RUN``: what happened."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from runners.base import LOG_FILE
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_duration, fmt_time, styled
from scheduler.daemon.assembly import build_source
from scheduler.kernel.errors import UnknownRunError
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import RunRecord, change_range

FAILING = ("failed", "error", "xpassed")


@click.command("runs")
@click.option("--tier", help="Only runs of this tier.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs_command(app: AppContext, tier: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    if tier:
        app.config.tier(tier)
    records = app.store.list_runs(tier=tier, limit=limit)
    if as_json:
        emit_json([r.to_json() for r in records])
        return
    table = Table("id", "tier", "trigger", "outcome", "started", "duration", "pass/fail", "sha")
    for r in records:
        counts = r.counts
        table.add_row(
            str(r.id),
            r.tier,
            r.trigger,
            styled(r.outcome),
            fmt_time(r.started_at or r.queued_at),
            fmt_duration(r.duration_s),
            f"{counts.get('passed', 0)}/{counts.get('failed', 0)}",
            (r.sha or "")[:10],
        )
    console().print(table)


def _run_id(value: str) -> int:
    if not value.isdigit():
        raise UnknownRunError(f"run id must be a number, got {value!r}")
    return int(value)


def changes_since_green(app: AppContext, record: RunRecord, green: RunRecord | None) -> list[str]:
    """``git log --oneline`` from the tier's last green run ``green`` to this run."""
    span = change_range(green, record)
    if record.outcome is Outcome.PASSED or span is None:
        return []
    source = build_source(app.config)
    if source is None:
        return []
    changes: list[str] = source.changes_between(*span)
    return changes


def show_payload(app: AppContext, record: RunRecord) -> dict[str, Any]:
    tests = app.store.test_results_for(record.id)
    payload = record.to_json()
    payload["tests"] = [
        {
            "nodeid": t.nodeid,
            "outcome": t.outcome,
            "duration_s": t.duration_s,
            "markers": t.markers,
            "message": t.message,
        }
        for t in tests
    ]
    green = app.store.last_green(record.tier, before_id=record.id)
    payload["last_green_run_id"] = green.id if green else None
    payload["changes_since_green"] = changes_since_green(app, record, green)
    return payload


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_command(app: AppContext, run: str, as_json: bool) -> None:
    """Show one run: outcome, provenance and per-test results."""
    record = app.store.get_run(_run_id(run))
    payload = show_payload(app, record)
    if as_json:
        emit_json(payload)
        return
    out = console()
    out.print(f"[bold]run {record.id}[/bold]  tier {record.tier}  {styled(record.outcome)}")
    rows = [
        ("reason", record.reason),
        ("trigger", record.trigger + (f" (slot {fmt_time(record.slot)})" if record.slot else "")),
        ("started", fmt_time(record.started_at)),
        ("duration", fmt_duration(record.duration_s)),
        ("exit code", str(record.exit_code)),
        ("runner", record.runner or "-"),
        (
            "commit",
            f"{record.sha or '-'} {record.source.get('subject', '') if record.source else ''}",
        ),
        ("ref", record.ref or "-"),
        ("image", f"{record.image or '-'} {record.image_id or ''}".strip()),
        ("container", record.container_id or "-"),
        ("markers", record.markers or "-"),
    ]
    if record.gpus:
        names = ", ".join(f"{g.get('index')}:{g.get('name')} {g.get('uuid')}" for g in record.gpus)
        rows.append(("gpus", names))
        rows.append(("driver/cuda", f"{record.driver_version} / {record.cuda_version}"))
    for key, value in rows:
        out.print(f"  {key:<10} {value}")
    counts = record.counts
    out.print("  counts     " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    for extra in ("comparison_table",):
        if record.details.get(extra):
            out.print(record.details[extra])
    if payload["changes_since_green"]:
        out.print(f"[bold]changes since last green run {payload['last_green_run_id']}:[/bold]")
        for line in payload["changes_since_green"]:
            out.print(f"  {line}")
    tests = payload["tests"]
    if tests:
        table = Table("outcome", "duration", "test")
        ordered = sorted(tests, key=lambda t: (t["outcome"] not in FAILING, t["nodeid"]))
        for t in ordered:
            table.add_row(t["outcome"], f"{t['duration_s']:.2f}s", t["nodeid"])
        out.print(table)
        for t in ordered:
            if t["outcome"] in FAILING and t["message"]:
                out.print(f"[red]{t['nodeid']}[/red]\n{t['message']}\n")


@click.command("logs")
@click.argument("run")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the run is active.")
@click.pass_obj
def logs_command(app: AppContext, run: str, follow: bool) -> None:
    """Print the captured output of a run."""
    record = app.store.get_run(_run_id(run))
    path = Path(record.run_dir or "") / LOG_FILE
    if not path.exists():
        if record.pruned_at:
            raise click.ClickException(f"the log of run {record.id} was pruned by retention")
        raise click.ClickException(f"run {record.id} has no log ({record.outcome.value})")
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow or app.store.get_run(record.id).outcome.is_final:
                break
            time.sleep(0.5)
