"""Core statements run on the database driver's own cursor, for the store's bulk paths.

History reads return thousands of rows and a run's results are hundreds of inserts: SQLAlchemy's
per-row work (bind and result processing, a parameter dict per row) costs more there than the
database's own (about 4x at 1,000,000 results). A :class:`Statement` is a Core query compiled
once for the connection's dialect (so it stays portable: the paramstyle and SQL are the
dialect's), then executed with plain values. No type processing happens on this path: callers
pass and read plain ints, floats, strings and ``None``, and bind datetimes through
:func:`bind_datetime`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Statement", "bind_datetime", "fetch"]


class Statement:
    """One compiled statement on one connection (its transaction).

    ``cached``: ``query`` is a module constant (it has no per-call values), so its compiled form
    is kept per dialect: compiling an upsert costs more than running it for a run's results.
    """

    def __init__(self, conn: Connection, query: sa.ClauseElement, *, cached: bool = False) -> None:
        self._conn = conn
        compiled, self._sql, self._order = (_compile_cached if cached else _compile)(
            query, conn.dialect
        )
        self._compiled = compiled
        self._defaults: dict[str, Any] | None = None

    def _args(self, params: Mapping[str, Any]) -> Any:
        # The statement's own values (literals, limits) under the ones given.
        if self._defaults is None:
            self._defaults = dict(self._compiled.construct_params() or {})
        values = {**self._defaults, **params}
        return values if self._order is None else tuple(values[k] for k in self._order)

    def _cursor(self) -> Any:
        driver = self._conn.connection.driver_connection
        assert driver is not None
        return driver.cursor()

    def rows(self, **params: Any) -> list[Any]:
        """Execute with ``params`` (by bind name) and return every row as the driver gives it."""
        cursor = self._cursor()
        try:
            cursor.execute(self._sql, self._args(params))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def run(self, **params: Any) -> int:
        """Execute a statement that returns no rows with ``params``; its row count."""
        cursor = self._cursor()
        try:
            cursor.execute(self._sql, self._args(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (the driver's ``executemany``); each row gives every bound
        parameter of the statement, by name."""
        if not rows:
            return
        order = self._order
        if order is None:
            args: Any = rows
        elif len(order) == 1:
            args = [(row[order[0]],) for row in rows]
        else:
            # A run's results are ~1,500 rows of 14 values: C-level item getting, not a
            # generator per row (that cost more than SQLite's inserts).
            args = list(map(operator.itemgetter(*order), rows))
        cursor = self._cursor()
        try:
            cursor.executemany(self._sql, args)
        finally:
            cursor.close()


def _compile(
    query: sa.ClauseElement, dialect: Dialect
) -> tuple[SQLCompiler, str, list[str] | None]:
    compiled = cast(
        SQLCompiler,
        query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}),
    )
    order = list(compiled.positiontup or ()) if compiled.positional else None
    return compiled, str(compiled), order


# Keyed by the statement object itself (module constants) and the engine's dialect: no state
# that changes what a query returns, only the compiled text of constants.
_compile_cached = functools.lru_cache(maxsize=64)(_compile)


def fetch(conn: Connection, query: sa.ClauseElement) -> list[Any]:
    return Statement(conn, query).rows()


def bind_datetime(conn: Connection, value: datetime | None) -> Any:
    """``value`` as the dialect's ``DateTime`` column stores it (SQLite: text)."""
    processor = _datetime_processor(conn.dialect)
    return processor(value) if processor is not None else value


@functools.lru_cache(maxsize=8)
def _datetime_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = (
        sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    )
    return processor
