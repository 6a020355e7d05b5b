"""The store suite runs on both engines: ``store`` is a SQLite file, then a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.run.protocols import RunStore
from scheduler.store.engine import Store
from scheduler.store.writer import SqliteWriter, open_writer


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(tmp_path / "state" / "schedctl.db")
    pg_store: Store = request.getfixturevalue("pg_store")
    return pg_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "schedctl.db")


@pytest.fixture(params=["sqlite", "sqlite3-writer", "postgresql"])
def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    """What writes the runs: the store on both engines, or the sqlite3 writer on the file."""
    if request.param == "postgresql":
        pg_store: Store = request.getfixturevalue("pg_store")
        yield pg_store
        return
    path = tmp_path / "state" / "schedctl.db"
    store = Store(path)
    if request.param == "sqlite":
        yield store
        store.close()
        return
    store.close()
    writer = open_writer(path)
    assert isinstance(writer, SqliteWriter)
    yield writer
    writer.close()
