"""Read-only test-health pages: server-rendered HTML (Jinja2, autoescaped) with inline SVG.

- :mod:`.pages`: what each page shows, read from the store (no HTML);
- :mod:`.charts`: SVG geometry; :mod:`.gpus`: the GPU strip; :mod:`.markers`: the audit view;
- :mod:`.server`: routing, escaping, security headers, access (token off loopback);
- :class:`WebService`: the daemon's listener at ``daemon.web_address``; ``schedctl web``
  serves the same pages from the store without the daemon.

The daemon listens from its start but builds the pages (their modules, the owners, the GPU
strip) and loads Jinja2 at the first request: a daemon nobody browses keeps them out of memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from scheduler.kernel.clock import utcnow
from scheduler.web.server import Response, WebApp, WebServer, make_server, serve_in_thread, stop

if TYPE_CHECKING:
    from scheduler.config import Config
    from scheduler.daemon.scheduler import Daemon
    from scheduler.store.engine import Store
    from scheduler.web.pages import Pages, Sources

__all__ = ["Pages", "Sources", "WebApp", "WebService", "build_pages", "cron_next_fire"]

log = structlog.get_logger("schedctl.web")


def __getattr__(name: str) -> Any:
    """``Pages`` and ``Sources`` from :mod:`.pages`, imported when first asked for."""
    if name in ("Pages", "Sources"):
        from scheduler.web import pages

        return getattr(pages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cron_next_fire(config: Config) -> Callable[[], Mapping[str, datetime | None]]:
    """Next fire per tier from the config's cron lines (``schedctl web`` has no scheduler)."""
    from scheduler.daemon.cron import next_fire_times, parse_cron

    def fires() -> dict[str, datetime | None]:
        tz = ZoneInfo(config.timezone)
        out: dict[str, datetime | None] = {}
        now = utcnow()
        for name, tier in config.tiers.items():
            if tier.schedule is None or not tier.enabled:
                out[name] = None
                continue
            times = next_fire_times(parse_cron(tier.schedule, tz), now, 1)
            out[name] = times[0].astimezone(timezone.utc) if times else None
        return out

    return fires


def build_pages(
    config: Config | None,
    store: Store,
    *,
    next_fire: Callable[[], Mapping[str, datetime | None]] | None = None,
) -> Pages:
    """Pages over ``store``; with a config, its tiers, owners, commit log and GPU strip."""
    from scheduler.history.owners import Owners
    from scheduler.web.gpus import gpu_source
    from scheduler.web.pages import Pages, Sources

    if config is None:
        return Pages(Sources(store=store, gpus=gpu_source(None, store)))
    from scheduler.source import Source

    source = Source(config.project, config.state_dir)
    return Pages(
        Sources(
            store=store,
            tiers=lambda: list(config.tiers),
            next_fire=next_fire or cron_next_fire(config),
            changes=source.changes_between,
            gpus=gpu_source(config, store),
            owners=Owners.load(config.project.path, config.owners),
            state_dir=config.state_dir,
        )
    )


class WebService:
    """The pages on ``daemon.web_address`` for as long as the daemon lives.

    A non-loopback address without the API token stops the daemon from starting
    (:class:`~scheduler.kernel.errors.DaemonError`), as does an address it cannot listen on.
    """

    name = "web"

    def __init__(self, config: Config, store: Store, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.store = store
        self.env = env
        self.server: WebServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, daemon: Daemon) -> None:
        from scheduler.api.server import load_token

        address = self.config.daemon.web_address
        assert address is not None
        token = load_token(self.config.daemon.api, self.env)
        app = _BuiltOnFirstRequest(
            lambda: WebApp(build_pages(self.config, self.store, next_fire=daemon.next_fire_times))
        )
        self.server = make_server(address, app, token)
        self._thread = serve_in_thread(self.server)
        log.info("web_listening", url=self.server.url)

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server, self._thread)
            self.server = None


class _BuiltOnFirstRequest:
    """The daemon's app: builds its :class:`WebApp` (pages, owners, GPU strip) at the first
    request, and again at the next one if building failed."""

    def __init__(self, build: Callable[[], WebApp]) -> None:
        self._build = build
        self._app: WebApp | None = None
        self._lock = threading.Lock()

    def handle(self, target: str) -> Response:
        with self._lock:
            if self._app is None:
                try:
                    self._app = self._build()
                except Exception:
                    log.exception("web_pages_unavailable")
                    return Response(
                        500, b"500 the pages cannot be built; see the daemon log\n",
                        "text/plain; charset=utf-8",
                    )  # fmt: skip
            app = self._app
        return app.handle(target)
