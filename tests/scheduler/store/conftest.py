"""The store suite runs on both engines: ``store`` is a SQLite file, then a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.store.engine import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(tmp_path / "state" / "schedctl.db")
    pg_store: Store = request.getfixturevalue("pg_store")
    return pg_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "schedctl.db")
