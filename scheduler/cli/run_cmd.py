"""``schedctl run TIER``: run a tier in the foreground with live progress."""

from __future__ import annotations

import threading
from typing import Any

import click

from runners.base import Outcome
from scheduler.assembly import build_dispatcher
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_duration, styled
from scheduler.cli.progress import ProgressView
from scheduler.dispatch import RunRequest
from scheduler.events import Event, RunQueued
from scheduler.store import RunRecord


def run_summary(record: RunRecord) -> dict[str, Any]:
    """The ``--json`` object of ``schedctl run``."""
    from scheduler.results import empty_counts

    counts = {**empty_counts(), **dict(record.counts)}
    return {
        "run_id": record.id,
        "tier": record.tier,
        "trigger": record.trigger,
        "outcome": record.outcome.value,
        "reason": record.reason,
        "exit_code": record.exit_code,
        "counts": counts,
        "duration_s": record.duration_s,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "sha": record.sha,
        "runner": record.runner,
        "details": dict(record.details),
    }


@click.command("run")
@click.argument("tier")
@click.option("--ref", help="Branch, tag or SHA to test (default: the configured branch).")
@click.option("-m", "markers", help="pytest -m expression overriding the tier's markers.")
@click.option("--timeout", "timeout_s", type=float, help="Timeout in seconds for this run.")
@click.option("--runner", type=click.Choice(["auto", "local", "docker"]), help="Runner backend.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.pass_obj
def run_command(
    app: AppContext,
    tier: str,
    ref: str | None,
    markers: str | None,
    timeout_s: float | None,
    runner: str | None,
    as_json: bool,
) -> None:
    """Run TIER now, in this process, and wait for the result (exit 0 only when passed)."""
    config = app.config
    config.tier(tier)
    request = RunRequest(
        tier=tier, trigger="manual", ref=ref, markers=markers, timeout_s=timeout_s, runner=runner
    )
    dispatcher = build_dispatcher(config, app.store)
    dispatcher.validate(request)
    view = ProgressView(enabled=not as_json)
    started = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, RunQueued):
            view.watch(event.run_dir, event.run_id, event.tier)
            started.set()

    dispatcher.add_listener(on_event)
    cancel = threading.Event()
    outcome: dict[str, RunRecord] = {}

    def work() -> None:
        outcome["record"] = dispatcher.run(request, cancel)

    worker = threading.Thread(target=work, name="run", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            view.refresh()
    except KeyboardInterrupt:
        console(stderr=True).print("[yellow]interrupted: cancelling the run...[/yellow]")
        cancel.set()
        worker.join()
    finally:
        view.close()
    record = outcome.get("record")
    if record is None:
        raise click.ClickException("the run did not produce a record (see the log above)")
    if as_json:
        emit_json(run_summary(record))
    else:
        _print_result(record)
    raise SystemExit(0 if record.outcome is Outcome.PASSED else 1)


def _print_result(record: RunRecord) -> None:
    out = console()
    counts = record.counts
    parts = [f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped")]
    out.print(
        f"run {record.id} ({record.tier}): {styled(record.outcome)} in "
        f"{fmt_duration(record.duration_s)} - {', '.join(parts)}"
    )
    if record.reason:
        out.print(f"  {record.reason}")
    out.print(f"  details: schedctl show {record.id}   log: schedctl logs {record.id}")
