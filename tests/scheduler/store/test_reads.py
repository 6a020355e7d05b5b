"""The reader's generated SQL is what its Core queries compile to now."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scheduler.store import reads, sqlite_reads
from scheduler.store.schema import SCHEMA_VERSION


def test_generated_statements_are_current() -> None:
    """Fails after a change to a table or query: run ``python -m scheduler.store.reads``."""
    assert sqlite_reads.SCHEMA_VERSION == SCHEMA_VERSION
    assert reads.compile_all() == sqlite_reads.STATEMENTS


def test_every_statement_runs_on_a_fresh_store(tmp_path: Path) -> None:
    from scheduler.store.engine import Store

    store = Store(tmp_path / "s.db")
    conn = sqlite3.connect(store.path)
    for sql, defaults, columns in sqlite_reads.STATEMENTS.values():
        cursor = conn.execute(sql, defaults)
        assert [d[0] for d in cursor.description] == [name for name, _kind in columns]
    conn.close()


def test_the_package_exports_the_engines_names_lazily() -> None:
    import scheduler.store
    from scheduler.store import engine

    assert scheduler.store.__all__ == engine.__all__
    assert scheduler.store.Store is engine.Store
