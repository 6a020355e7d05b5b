"""Nobody outside ``scheduler/store/`` writes SQL: checked on the import graph, parsed with ``ast``.

Outside the store, production code (``scheduler/``, ``runners/``) may not import SQLAlchemy or
sqlite3, nor the store's table objects (with a table, ``conn.execute(runs.select())`` needs no
SQLAlchemy import). The one exception: the daemon's scheduler wiring hands APScheduler's
``SQLAlchemyJobStore`` the store's URL.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.store import schema

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("scheduler", "runners")
STORE = ROOT / "scheduler" / "store"
SQL_MODULES = {"sqlalchemy", "sqlite3", "psycopg"}
ALLOWED = {
    # (file relative to the repository root, module it may import)
    ("scheduler/daemon/scheduler.py", "apscheduler.jobstores.sqlalchemy"),
}
TABLE_NAMES = frozenset(
    name
    for name, value in vars(schema).items()
    if isinstance(value, sa.Table | sa.MetaData) and not name.startswith("_")
)


def _imports(tree: ast.AST, rel: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """``(line, absolute module, names imported from it)`` for every import, nested and
    relative ones included (``rel``: the file's path, relative to the repository root)."""
    package = rel.removesuffix(".py").split("/")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module, tuple(a.name for a in node.names)


def _is_sql(module: str, names: tuple[str, ...]) -> bool:
    parts = module.split(".")
    if SQL_MODULES & set(parts):
        return True
    # ``from sqlalchemy import x`` is caught above; ``from a import sqlalchemy`` here.
    return bool(SQL_MODULES & set(names))


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if STORE not in p.parents]


def violations(source: str, rel: str) -> list[str]:
    """What in ``source`` (the file ``rel``, relative to the repository root) breaks the rule."""
    found = []
    for line, module, names in _imports(ast.parse(source, filename=rel), rel):
        if _is_sql(module, names) and (rel, module) not in ALLOWED:
            found.append(f"{rel}:{line}: imports {module}")
        if module.split(".")[:2] == ["scheduler", "store"]:
            tables = sorted(TABLE_NAMES.intersection(names))
            if tables or "*" in names:
                found.append(f"{rel}:{line}: imports {', '.join(tables) or '*'} from {module}")
    return found


def test_only_the_store_speaks_sql() -> None:
    """Outside scheduler/store/, no module imports SQLAlchemy, sqlite3 or a store table."""
    files = _sources()
    assert len(files) > 50, "found too few modules: is ROOT right?"
    problems = [
        v for path in files for v in violations(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert problems == [], "SQL belongs in scheduler/store/:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "rel", "bad"),
    [
        ("import sqlalchemy as sa", "scheduler/metrics/x.py", True),
        ("from sqlalchemy.engine import Connection", "scheduler/alerts/x.py", True),
        ("import sqlite3", "scheduler/metrics/server.py", True),
        ("def f():\n    import sqlite3", "runners/x.py", True),
        ("from sqlalchemy.dialects.sqlite import insert", "scheduler/x.py", True),
        ("from scheduler.store.engine import Store, runs", "scheduler/metrics/x.py", True),
        ("from scheduler.store import *", "scheduler/cli/x.py", True),
        ("from ..store.engine import alert_state", "scheduler/alerts/x.py", True),
        ("from ..store import engine", "scheduler/alerts/x.py", False),
        ("from apscheduler.jobstores.sqlalchemy import J", "scheduler/run/x.py", True),
        ("from apscheduler.jobstores.sqlalchemy import J", "scheduler/daemon/scheduler.py", False),
        ("from scheduler.store.engine import RunRecord, Store", "scheduler/cli/x.py", False),
        ("import json", "scheduler/x.py", False),
    ],
)
def test_the_check_sees_what_it_should(source: str, rel: str, bad: bool) -> None:
    """The checker itself: direct, nested and from-imports, tables, the one exception."""
    assert bool(violations(source, rel)) is bad
