"""A read-only view of a SQLite store on the standard ``sqlite3`` module: no SQLAlchemy import.

``schedctl runs``, ``show`` and ``status`` read a few rows and print them; importing SQLAlchemy
and building the schema would cost them several times what the reads do. On a SQLite store whose
schema is the one this schedctl speaks, they read through :class:`SqliteReader`, which runs the
statements of :mod:`.sqlite_reads` (generated from Core queries by :mod:`.reads`) and converts
the columns SQLAlchemy would have converted (datetimes, JSON, booleans). It answers exactly as
:class:`~.engine.Store` does for the methods in :class:`RunReader` (a contract test runs both).

:func:`open_reader` returns ``None`` whenever the full store has to be opened instead: a
PostgreSQL store, no database file yet (the store creates it), or a schema version other than
the generated one (the store migrates or refuses it with its own message).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from scheduler.kernel.errors import StoreError, UnknownRunError
from scheduler.store.base import aware
from scheduler.store.records import (
    QuarantineRow,
    RunRecord,
    TestResultRow,
    failures_in_a_row,
    result_rows,
    stored_isoformat,
)
from scheduler.store.sqlite_reads import SCHEMA_VERSION, STATEMENTS

__all__ = ["RunReader", "SqliteReader", "open_reader"]

BUSY_TIMEOUT_S = 15.0
_OUTCOME_SETS = {("queued", "running"): "active", ("passed",): "passed"}


class RunReader(Protocol):
    """What the read-only commands ask of a store; :class:`~.engine.Store` and
    :class:`SqliteReader` both provide it."""

    location: str

    def get_run(self, run_id: int) -> RunRecord: ...

    def list_runs(
        self,
        tier: str | None = None,
        limit: int = 20,
        outcomes: Sequence[str] | None = None,
        before_id: int | None = None,
    ) -> list[RunRecord]: ...

    def runs_json(self, tier: str | None = None, limit: int = 20) -> list[dict[str, Any]]: ...

    def active_runs(self, tier: str | None = None) -> list[RunRecord]: ...

    def last_run(self, tier: str, outcomes: Sequence[str] | None = None) -> RunRecord | None: ...

    def last_green(self, tier: str, before_id: int | None = None) -> RunRecord | None: ...

    def consecutive_failures(self, tier: str) -> int: ...

    def test_results_for(self, run_id: int, attempts: bool = False) -> list[TestResultRow]: ...

    def quarantine_list(self) -> list[QuarantineRow]: ...

    def active_leases(self) -> list[dict[str, Any]]: ...


def open_reader(path: Path) -> SqliteReader | None:
    """A reader on the SQLite file ``path``; ``None`` when the full store must open it."""
    if not path.is_file():
        return None
    try:
        reader = SqliteReader(path)
    except StoreError:
        return None
    try:
        version = reader.schema_version()
    except StoreError:
        version = None
    if version != SCHEMA_VERSION:
        reader.close()
        return None
    return reader


def _datetime(value: Any) -> Any:
    """SQLite's stored text (``2026-01-01 10:00:00.000000``) as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return aware(value)
    return aware(datetime.fromisoformat(str(value)))


def _json(value: Any) -> Any:
    if value == "{}":
        return {}
    if value == "[]":
        return []
    return json.loads(value) if isinstance(value, str | bytes) else value


def _convert(kind: str, value: Any) -> Any:
    if kind == "datetime":
        return _datetime(value)
    if kind == "json":
        return _json(value)
    if kind == "bool" and value is not None:
        return bool(value)
    return value


class SqliteReader:
    """Reads a schedctl SQLite store; see the module docstring. Errors name the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        try:
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.location}: {exc.__class__.__name__}: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    def _raw(self, name: str, **params: Any) -> list[Any]:
        sql, defaults, _columns = STATEMENTS[name]
        try:
            return self._conn.execute(sql, {**defaults, **params}).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.location}: {exc.__class__.__name__}: {exc}") from exc

    def _rows(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Rows as dicts, each column as SQLAlchemy's type would have given it."""
        columns = STATEMENTS[name][2]
        out = []
        for raw in self._raw(name, **params):
            row = {}
            for (column, kind), value in zip(columns, raw, strict=True):
                row[column] = _convert(kind, value)
            out.append(row)
        return out

    def schema_version(self) -> int | None:
        found = self._raw("schema_version")
        return int(found[0][0]) if found else None

    def get_run(self, run_id: int) -> RunRecord:
        found = self._rows("run", run_id=run_id)
        if not found:
            raise UnknownRunError(f"no run with id {run_id} in {self.location}")
        return RunRecord.from_row(found[0])

    def _newest(
        self,
        tier: str | None,
        limit: int,
        outcomes: Sequence[str] | None,
        before_id: int | None,
    ) -> tuple[str, dict[str, Any]]:
        named = None
        if outcomes:
            named = _OUTCOME_SETS.get(tuple(outcomes))
            if named is None:
                raise ValueError(f"the reader has no statement for outcomes {list(outcomes)}")
        before = int(before_id is not None)
        key = f"runs:tier={int(bool(tier))}:outcomes={named or ''}:before={before}"
        params: dict[str, Any] = {"limit": limit}
        if tier:
            params["tier"] = tier
        if before_id is not None:
            params["before_id"] = before_id
        return key, params

    def list_runs(
        self,
        tier: str | None = None,
        limit: int = 20,
        outcomes: Sequence[str] | None = None,
        before_id: int | None = None,
    ) -> list[RunRecord]:
        key, params = self._newest(tier, limit, outcomes, before_id)
        return [RunRecord.from_row(row) for row in self._rows(key, **params)]

    def runs_json(self, tier: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """As :meth:`~.run_queries.RunQueries.runs_json`: ``RunRecord.to_json`` of each run,
        read straight into dicts."""
        key, params = self._newest(tier, limit, None, None)
        columns = STATEMENTS[key][2]
        out = []
        for raw in self._raw(key, **params):
            record: dict[str, Any] = {}
            for (column, kind), value in zip(columns, raw, strict=True):
                if kind == "datetime":
                    record[column] = None if value is None else stored_isoformat(value)
                else:
                    record[column] = _json(value) if kind == "json" else value
            record["run_id"] = record["id"]
            out.append(record)
        return out

    def active_runs(self, tier: str | None = None) -> list[RunRecord]:
        return self.list_runs(tier=tier, limit=1000, outcomes=["queued", "running"])

    def last_run(self, tier: str, outcomes: Sequence[str] | None = None) -> RunRecord | None:
        found = self.list_runs(tier=tier, limit=1, outcomes=outcomes)
        return found[0] if found else None

    def last_green(self, tier: str, before_id: int | None = None) -> RunRecord | None:
        found = self.list_runs(tier=tier, limit=1, outcomes=["passed"], before_id=before_id)
        return found[0] if found else None

    def consecutive_failures(self, tier: str) -> int:
        return failures_in_a_row(row[0] for row in self._raw("streak", tier=tier))

    def test_results_for(self, run_id: int, attempts: bool = False) -> list[TestResultRow]:
        found = self._raw("run_results", run_id=run_id)
        return result_rows(found, attempts)

    def quarantine_list(self) -> list[QuarantineRow]:
        return [
            QuarantineRow(
                nodeid=row["nodeid"],
                reason=row["reason"],
                created_at=row["created_at"],
                owner=row["owner"],
                expires_at=row["expires_at"],
                expiry_alerted_at=row["expiry_alerted_at"],
            )
            for row in self._rows("quarantine")
        ]

    def active_leases(self) -> list[dict[str, Any]]:
        return self._rows("leases")
