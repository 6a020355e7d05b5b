"""``schedctl daemon`` (the service), ``schedctl status`` and ``schedctl cancel RUN``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from scheduler.api.address import socket_path
from scheduler.api.payloads import status_payload
from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, line, styled
from scheduler.cli.schedule_cmd import upcoming
from scheduler.daemon.lock import StateLock
from scheduler.kernel.errors import DaemonError, UnknownRunError
from scheduler.kernel.outcome import Outcome

if TYPE_CHECKING:  # `schedctl daemon` imports these; status and cancel need none of them
    from scheduler.daemon.scheduler import Daemon
    from scheduler.daemon.sdnotify import Notifier, Watchdog
    from scheduler.kernel.events import Listener


@click.command("daemon")
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.pass_obj
def daemon_command(app: AppContext, log_format: str) -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT (systemd Type=notify aware)."""
    from scheduler.daemon.assembly import build_dispatcher, build_services
    from scheduler.daemon.scheduler import Daemon, install_signal_handlers, wait_for_signal
    from scheduler.daemon.sdnotify import Notifier
    from scheduler.daemon.secret_env import scrub_environment, secret_env_names
    from scheduler.logs import configure

    configure(json_logs=log_format == "json", level="info")
    config = app.config
    notifier = Notifier.from_env()
    dispatcher = build_dispatcher(config, app.store)
    daemon = Daemon(config, app.store, dispatcher, build_services(config, app.store, dispatcher))
    dispatcher.add_listener(_status_line(notifier, dispatcher.active_run_ids))
    stopping = threading.Event()
    install_signal_handlers(stopping)  # a SIGTERM during recovery still stops gracefully
    daemon.start()
    # Loaded by now (API token, alert sinks): tests must not find them in our /proc environ.
    removed = scrub_environment(secret_env_names(config))
    if removed:
        import structlog

        structlog.get_logger("schedctl.daemon").info("secret_env_removed", names=removed)
    watchdog = _start_watchdog(app, notifier, daemon, stopping)
    notifier.ready(f"scheduling {len(config.tiers)} tiers; API on {socket_path(config)}")
    try:
        wait_for_signal(stopping)
    finally:
        stopping.set()
        notifier.stopping(f"stopping: letting runs finish (grace {config.daemon.grace:g}s)")
        daemon.stop()
        if watchdog is not None:
            watchdog.stop()


def _start_watchdog(
    app: AppContext, notifier: Notifier, daemon: Daemon, stopping: threading.Event
) -> Watchdog | None:
    from scheduler.daemon.sdnotify import Watchdog, watchdog_interval

    interval = watchdog_interval() if app.config.daemon.watchdog else None
    if interval is None or not notifier.enabled:
        return None
    # While stopping, the scheduler is down on purpose; keep systemd from killing the grace.
    watchdog = Watchdog(notifier, interval, lambda: stopping.is_set() or daemon.healthy())
    watchdog.start()
    return watchdog


def _status_line(notifier: Notifier, active: Callable[[], list[int]]) -> Listener:
    from scheduler.kernel.events import Event, RunFinished

    def on_event(event: Event) -> None:
        if isinstance(event, RunFinished) and notifier.enabled:
            notifier.status(
                f"last: {event.tier} run {event.run_id} {event.outcome.value}; "
                f"{len(active())} run(s) active"
            )

    return on_event


def local_status(app: AppContext) -> dict[str, Any]:
    """Status without a daemon: next fires come from the cron expressions."""
    config = app.read_config
    nexts: dict[str, datetime | None] = {}
    for row in upcoming(config, datetime.now(timezone.utc), 1):
        times = row["next"]
        assert isinstance(times, list)
        nexts[str(row["tier"])] = datetime.fromisoformat(times[0]) if times else None
    pid = StateLock.holder(config.state_dir)
    info = {"running": pid is not None, "pid": pid, "reachable": False}
    return status_payload(config, app.reader, nexts, info)


def status_data(app: AppContext) -> dict[str, Any]:
    if StateLock.holder(app.read_config.state_dir) is None:
        return local_status(app)  # no daemon: no HTTP client to import (http.client)
    from scheduler.api.client import daemon_client

    found = daemon_client(app.read_config, timeout=10)
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
