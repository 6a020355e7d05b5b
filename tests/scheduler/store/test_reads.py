"""The reader's generated SQL is what its Core queries compile to now."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from scheduler.store import reads, sqlite_reads
from scheduler.store.schema import SCHEMA_VERSION
from tests.fresh import python_c


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
    for name in engine.__all__:
        assert getattr(scheduler.store, name) is getattr(engine, name), name
    for missing in ("_private", "no_such_name", "no.such.module", ""):
        with pytest.raises(AttributeError, match=re.escape(repr(missing))):
            getattr(scheduler.store, missing)


def test_asking_for_a_submodule_or_plain_data_imports_no_sqlalchemy() -> None:
    """importlib probes ``from scheduler.store import writer`` with getattr first."""
    code = (
        "import sys\n"
        "import scheduler.store\n"
        "assert not hasattr(scheduler.store, 'writer')\n"
        "from scheduler.store import writer, records, RunRecord, ActiveRunExists\n"
        "assert RunRecord is records.RunRecord\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    assert python_c(code).stdout.strip() == "[]"
