"""The schema's PostgreSQL-only index options: attached when a PostgreSQL store opens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex

from scheduler.store import schema
from tests.conftest import ROOT


def ddl(dialect: Dialect) -> dict[str, str]:
    indexes = [*schema.runs.indexes, *schema.test_results.indexes]
    return {str(index.name): str(CreateIndex(index).compile(dialect=dialect)) for index in indexes}


def test_importing_the_store_does_not_import_the_postgresql_dialect() -> None:
    code = (
        "import sys, json, scheduler.store.engine\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sqlalchemy.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    loaded = json.loads(out.stdout)
    assert "sqlalchemy.dialects.sqlite" in loaded  # the probe sees the dialects it imported
    assert not [name for name in loaded if name.startswith("sqlalchemy.dialects.postgresql")]


def test_postgres_options_give_the_partial_and_covering_indexes() -> None:
    schema.postgres_options()
    schema.postgres_options()  # idempotent: a second PostgreSQL store opens in the process
    pg = ddl(postgresql.dialect())
    assert pg["ux_runs_active_tier"] == (
        "CREATE UNIQUE INDEX ux_runs_active_tier ON runs (tier) "
        "WHERE outcome IN ('queued', 'running')"
    )
    assert pg["ix_test_results_history"] == (
        "CREATE INDEX ix_test_results_history ON test_results (test_id, run_id) "
        "INCLUDE (outcome, final, duration_s)"
    )
    lite = ddl(sqlite.dialect())
    assert lite["ux_runs_active_tier"] == pg["ux_runs_active_tier"]  # the same rule on SQLite
    assert "INCLUDE" not in lite["ix_test_results_history"]
