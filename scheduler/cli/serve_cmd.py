"""``schedctl daemon``: the service, in the foreground until SIGTERM/SIGINT.

Its own module so that a running daemon imports only what it serves with: the read commands'
tables (rich), the control API's client and the status payloads stay out of its memory. The
scheduler's parts are imported inside the command, after structlog has been imported without
rich (see :mod:`scheduler.logs`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from scheduler.logs import configure, import_structlog_without_rich

# Before anything imports structlog: the CLI group configures logging before this command runs.
import_structlog_without_rich()

if TYPE_CHECKING:
    from scheduler.cli.app import AppContext
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
    import structlog

    from scheduler.api.address import socket_path
    from scheduler.daemon.assembly import build_dispatcher, build_services
    from scheduler.daemon.scheduler import Daemon, install_signal_handlers, wait_for_signal
    from scheduler.daemon.sdnotify import Notifier
    from scheduler.daemon.secret_env import scrub_environment, secret_env_names
    from scheduler.store.daemon_store import daemon_run_store

    configure(json_logs=log_format == "json", level="info")
    config = app.config
    notifier = Notifier.from_env()
    dispatcher = build_dispatcher(config, daemon_run_store(app.store))
    services = build_services(config, app.store, dispatcher)
    daemon = Daemon(config, app.store, dispatcher, services, freeze_heap=True)
    dispatcher.add_listener(_status_line(notifier, dispatcher.active_run_ids))
    stopping = threading.Event()
    install_signal_handlers(stopping)  # a SIGTERM during recovery still stops gracefully
    daemon.start()
    # Loaded by now (API token, alert sinks): tests must not find them in our /proc environ.
    removed = scrub_environment(secret_env_names(config))
    if removed:
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
