"""``schedctl web``: serve the read-only test-health pages from the store, without the daemon."""

from __future__ import annotations

from pathlib import Path

import click

from scheduler.cli.app import AppContext

DEFAULT_ADDRESS = "127.0.0.1:9465"


@click.command("web")
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Where to listen (default: daemon.web_address, else 127.0.0.1:9465; port 0 picks one). "
    "Off loopback the API token is required.",
)
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve this store file instead of the config's (no config needed).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="YYYY-MM-DD",
    help="End the pages' 30-day windows on this UTC day instead of now (an old store).",
)
@click.pass_obj
def web_command(app: AppContext, address: str | None, db: Path | None, as_of: str | None) -> None:
    """Serve the test-health pages (overview, runs, tests, flaky) until interrupted."""
    import os
    import threading
    from datetime import datetime, timedelta, timezone

    from scheduler.api.server import load_token
    from scheduler.config import ApiConfig
    from scheduler.daemon.scheduler import wait_for_signal
    from scheduler.kernel.errors import UsageError
    from scheduler.kernel.heap import frozen_heap
    from scheduler.store.engine import Store
    from scheduler.web import WebApp, build_pages
    from scheduler.web.server import make_server, serve_in_thread, stop

    if db is not None:
        if not db.is_file():
            raise UsageError(f"--db {db}: no such store file")
        config = None
        store = Store(db)
        api = ApiConfig()
    else:
        config = app.config
        store = app.store
        api = config.daemon.api
    chosen = address or (config.daemon.web_address if config else None) or DEFAULT_ADDRESS
    key = "--address" if address else "daemon.web_address"
    pages = build_pages(config, store)
    if as_of is not None:
        try:
            end = datetime.strptime(as_of, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            raise UsageError(f"--as-of {as_of!r}: expected a date YYYY-MM-DD") from None
        pages.src.clock = lambda: end + timedelta(days=1)
    server = make_server(chosen, WebApp(pages), load_token(api), key=key)
    # start-up's objects out of the full passes a page would otherwise pay for
    with frozen_heap():
        thread = serve_in_thread(server)
        click.echo(f"serving {server.url} (pid {os.getpid()}); Ctrl-C stops", err=False)
        try:
            wait_for_signal(threading.Event())
        finally:
            stop(server, thread)
