"""What differs between SQLite and PostgreSQL, in one place; the query modules call these.

The store speaks SQLAlchemy Core, which hides most of the difference. What it does not hide:

- upserts (``INSERT ... ON CONFLICT``) come from a dialect-specific ``insert`` construct;
- SQLite's two-argument ``max()`` is PostgreSQL's ``greatest()``;
- merging one key into a JSON column (SQLite ``json_set``; on PostgreSQL a locked read and a write);
- the raw driver cursor the history queries read through (``?`` vs ``%s`` placeholders,
  timestamps as ISO text vs ``datetime``);
- serialising a read-then-write transaction: SQLite's ``BEGIN IMMEDIATE`` takes the one write
  lock; on PostgreSQL a transaction-scoped advisory lock gives the same one-at-a-time step;
- claiming rows for one worker: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite has one writer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

__all__ = [
    "IMMEDIATE_LOCK_KEY",
    "driver_rows",
    "greatest",
    "greatest_for",
    "insert",
    "insert_for",
    "is_postgres",
    "merge_json_key",
    "serialise",
    "skip_locked",
    "snapshot",
    "stamp",
    "unique_violation_of",
]

# pg_advisory_xact_lock key of the store's "BEGIN IMMEDIATE" (any fixed 64-bit number).
IMMEDIATE_LOCK_KEY = 0x5C4EDC71


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def insert(conn: Connection, table: sa.Table) -> Any:
    """An ``INSERT`` with ``on_conflict_do_update``/``on_conflict_do_nothing`` for ``conn``.

    Its ``rowcount`` says whether a row was written (psycopg only reports it when asked).
    """
    return insert_for(conn.dialect.name, table)


def insert_for(dialect_name: str, table: sa.Table) -> Any:
    """:func:`insert` by the engine's dialect name, for statements built once per engine."""
    if dialect_name == "postgresql":
        # Imported on first use: the PostgreSQL dialect costs a SQLite command ~45 ms to import.
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).execution_options(preserve_rowcount=True)
    return sqlite.insert(table)


def greatest(conn: Connection, old: Any, new: Any) -> Any:
    """The larger of two values, the known one when either is NULL."""
    return greatest_for(conn.dialect.name, old, new)


def greatest_for(dialect_name: str, old: Any, new: Any) -> Any:
    """:func:`greatest` by the engine's dialect name."""
    if dialect_name == "postgresql":
        return sa.func.greatest(old, new)  # ignores NULLs
    # SQLite's two-argument max() is NULL when either is NULL; coalesce keeps the known one.
    return sa.func.max(sa.func.coalesce(old, new), sa.func.coalesce(new, old))


def serialise(conn: Connection) -> None:
    """Make the open transaction a one-at-a-time step (SQLite: ``BEGIN IMMEDIATE``)."""
    if is_postgres(conn):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(IMMEDIATE_LOCK_KEY)))
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def snapshot(conn: Connection) -> None:
    """Make the just-opened transaction read one snapshot throughout. PostgreSQL's default READ
    COMMITTED takes one per statement; the sqlite3 driver opens no transaction before a read,
    so each SELECT sees the newest commit unless a ``BEGIN`` holds a WAL read snapshot."""
    if is_postgres(conn):
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        conn.exec_driver_sql("BEGIN")


def skip_locked(conn: Connection, query: Select[Any]) -> Select[Any]:
    """``query`` locking the rows it returns, skipping rows another transaction holds."""
    if is_postgres(conn):
        return query.with_for_update(skip_locked=True)
    return query


def merge_json_key(
    conn: Connection, table: sa.Table, where: Any, column: str, key: str, value: Mapping[str, Any]
) -> None:
    """``column[key] = value`` in the rows of ``table`` matching ``where`` (an object column)."""
    col = table.c[column]
    if not is_postgres(conn):
        conn.execute(
            table.update()
            .where(where)
            .values(
                {
                    column: sa.func.json_set(
                        sa.func.coalesce(col, "{}"),
                        f'$."{key}"',
                        sa.func.json(json.dumps(dict(value), default=str)),
                    )
                }
            )
        )
        return
    # The row lock makes the read-merge-write atomic against another sink's merge.
    rows = conn.execute(sa.select(table).where(where).with_for_update()).mappings().all()
    for row in rows:
        current = row[column]
        merged = dict(current) if isinstance(current, Mapping) else {}
        merged[key] = json.loads(json.dumps(dict(value), default=str))
        conn.execute(table.update().where(where).values({column: merged}))


def driver_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows straight from the driver's cursor, in the open transaction.

    ``sql`` is written with ``?`` placeholders (sqlite3's style) and no other ``?`` or ``%``;
    on PostgreSQL they become psycopg's ``%s``. Timestamps come back as ISO text from SQLite and
    as ``datetime`` from psycopg: read them with :func:`stamp`.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    if is_postgres(conn):
        with driver.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), tuple(params))
            return list(cursor.fetchall())
    return list(driver.execute(sql, tuple(params)).fetchall())


def stamp(value: str | datetime | None) -> datetime | None:
    """A timestamp read through :func:`driver_rows` as an aware UTC ``datetime``."""
    if not value:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def unique_violation_of(exc: sa.exc.IntegrityError, index: str, sqlite_columns: str) -> bool:
    """Whether ``exc`` broke the unique index ``index`` (PostgreSQL names the index; SQLite
    names the columns, e.g. ``runs.tier``)."""
    text = str(exc.orig)
    return index in text or sqlite_columns in text
