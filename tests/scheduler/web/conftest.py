"""Fixtures for the web tests: a seeded store, its pages, and a live ``WebServer``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.store.engine import Store
from scheduler.web import Pages, Sources, WebApp
from scheduler.web.pages import GpuCell
from scheduler.web.server import WebServer, make_server, serve_in_thread, stop
from tests.scheduler.web.seed import NOW, Seeded, seed


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed(Store(tmp_path / "state" / "schedctl.db"), tmp_path / "runs")


def pages_for(seeded: Seeded, **extra: object) -> Pages:
    sources = Sources(
        store=seeded.store,
        tiers=lambda: ["hourly", "daily", "weekly"],
        next_fire=lambda: {"hourly": NOW, "daily": None, "weekly": None},
        changes=lambda old, new: [f"{new[:7]} <b>break</b> things", "abc1234 {{ 7*7 }}"],
        gpus=lambda: [GpuCell(0, "H100", "leased", "run 11"), GpuCell(1, "H100", "free")],
        clock=lambda: NOW,
        markers_installed=False,
    )
    for key, value in extra.items():
        setattr(sources, key, value)
    return Pages(sources)


@pytest.fixture
def app(seeded: Seeded) -> WebApp:
    return WebApp(pages_for(seeded))


@pytest.fixture
def server(app: WebApp) -> Iterator[WebServer]:
    srv = make_server("127.0.0.1:0", app, None)
    thread = serve_in_thread(srv)
    yield srv
    stop(srv, thread)
