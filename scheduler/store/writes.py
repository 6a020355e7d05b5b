"""The statements the sqlite3 writer runs, as Core statements, and the generator of their text.

``schedctl run`` writes a run's lifecycle (the row, its start, its results and rollups, its end).
Importing SQLAlchemy and building the schema cost it more than the writes do, so on a SQLite store
it writes through :mod:`.writer` on the standard ``sqlite3`` module instead. As with the reader
(:mod:`.reads`), its SQL is not written by hand: the Core statements below -- the store's own
where it has them as constants -- are compiled once for SQLite (``qmark`` style, each with the
order of its parameters) and written to :mod:`.sqlite_writes`, with the kind of each ``runs``
column (datetime, JSON, boolean: what SQLAlchemy's types would have converted) and the value a
column gets when an insert leaves it out (its Python default, as bound). A test checks that the
file matches what this module generates now::

    python -m scheduler.store.writes  # rewrites scheduler/store/sqlite_writes.py

Change a table, the schema version or one of these statements, and regenerate.
"""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from scheduler.store.daily import rollups_from_results, rollups_skipping
from scheduler.store.lease_queries import DEAD_LEASES
from scheduler.store.nodeids import _BY_NODEID, CHUNK
from scheduler.store.reads import _kind
from scheduler.store.run_queries import (
    _DELETE_RESULTS,
    _DELETE_STAGED,
    _INSERT_RESULTS,
    _RUN_BY_KEY,
)
from scheduler.store.schema import ACTIVE_OUTCOMES, SCHEMA_VERSION, runs, tests
from scheduler.store.staging import DELETE_MERGED, merge_statement

TARGET = Path(__file__).with_name("sqlite_writes.py")
SETS = "{sets}"
"""Where an update's ``SET`` list goes in :data:`UPDATES`' templates."""

Statement = tuple[str, tuple[str, ...], dict[str, Any]]

_DIALECT = sqlite.dialect(paramstyle="qmark")


def _optional(name: str, column: Any) -> Any:
    return sa.bindparam(name, None, type_=column.type)


def statements() -> dict[str, sa.ClauseElement]:
    """Every whole statement the writer runs, by name."""
    return {
        "insert_run": runs.insert().values(
            {c.name: _optional(c.name, c) for c in runs.c if c.name != "id"}
        ),
        "run_by_key": _RUN_BY_KEY,
        "test_ids": _BY_NODEID,
        "insert_tests": sqlite.insert(tests)
        .values(nodeid=sa.bindparam("nodeid", None, type_=sa.String))
        .on_conflict_do_nothing(index_elements=["nodeid"]),
        "delete_results": _DELETE_RESULTS,
        "delete_staged": _DELETE_STAGED,
        "insert_results": _INSERT_RESULTS,
        # The merge of staged results into test_results (:mod:`.staging`), one transaction.
        "merge_results": merge_statement("sqlite"),
        "delete_merged": DELETE_MERGED,
        # The run's rows are at hand: the superseded final rows are named, not looked for
        # (``_skipping``) where SQLite has its JSON functions (built in since 3.38).
        **{f"rollup_{period}": upsert for upsert, period in rollups_from_results("sqlite")},
        **{f"rollup_{period}_skipping": upsert for upsert, period in rollups_skipping("sqlite")},
        "release_dead_leases": DEAD_LEASES,
    }


def updates() -> dict[str, sa.Update]:
    """The run updates, each setting one column (``tier``): :func:`render` makes templates."""
    by_id = runs.c.id == sa.bindparam("run_id_", 0, type_=sa.Integer)
    update = runs.update().values(tier=_optional("tier", runs.c.tier))
    return {
        "update_run": update.where(by_id),
        # finish_run: only while the run is active (a run finishes once).
        "finish_run": update.where(by_id, runs.c.outcome.in_(ACTIVE_OUTCOMES)),
    }


def _compile(query: sa.ClauseElement) -> Statement:
    compiled = cast(
        SQLCompiler,
        query.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True}),
    )
    order = tuple(compiled.positiontup or ())
    defaults = {
        key: value
        for key, value in (compiled.construct_params(_check=False) or {}).items()
        if value is not None
    }
    return str(compiled), order, defaults


def _bound_default(column: Any) -> Any:
    """The value an insert that leaves ``column`` out stores (its Python default, bound)."""
    default = column.default
    if default is None:
        return None
    value = default.arg(None) if default.is_callable else default.arg
    processor = column.type.bind_processor(_DIALECT)
    return processor(value) if processor is not None else value


def run_columns() -> dict[str, tuple[str, str, Any]]:
    """``{column: (its SET item, kind, bound default)}`` for every ``runs`` column but ``id``."""
    out = {}
    for column in runs.c:
        if column.name == "id":
            continue
        text = str(
            runs.update()
            .values({column.name: _optional(column.name, column)})
            .compile(dialect=_DIALECT)
        )
        out[column.name] = (text.split(" SET ", 1)[1], _kind(column), _bound_default(column))
    return out


def compile_all() -> dict[str, Any]:
    """What :mod:`.sqlite_writes` holds, by its names there."""
    templates = {}
    tier_set = run_columns()["tier"][0]
    for name, query in updates().items():
        sql, order, defaults = _compile(query)
        assert sql.count(f"SET {tier_set} ") == 1 and order[0] == "tier", sql
        templates[name] = (sql.replace(f"SET {tier_set} ", f"SET {SETS} "), order[1:], defaults)
    return {
        "CHUNK": CHUNK,
        "RUN_COLUMNS": run_columns(),
        "STATEMENTS": {name: _compile(query) for name, query in statements().items()},
        "UPDATES": templates,
    }


_TYPES = {
    "CHUNK": "int",
    "RUN_COLUMNS": "dict[str, tuple[str, str, Any]]",
    "STATEMENTS": "dict[str, tuple[str, tuple[str, ...], dict[str, Any]]]",
    "UPDATES": "dict[str, tuple[str, tuple[str, ...], dict[str, Any]]]",
}


def render() -> str:
    parts = [
        '"""Generated by ``python -m scheduler.store.writes`` from its Core statements: '
        "do not edit.\n\n"
        "The SQLite text of the sqlite3 writer's statements (:mod:`.writer`), ``qmark`` style\n"
        "with each statement's parameter order; a test checks it is what the generator makes\n"
        'now."""\n\n'
        "from typing import Any\n\n"
        f"SCHEMA_VERSION = {SCHEMA_VERSION}\n"
    ]
    for name, value in compile_all().items():
        body = pprint.pformat(value, width=96, sort_dicts=True)
        parts.append(f"\n{name}: {_TYPES[name]} = {body}\n")
    return "".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET} (then: ruff format {TARGET})")
