"""The SQLite schema: tables, indexes, the schema version and its migrations.

History queries (durations, flake rates, last N runs of a tier) stay fast at 1M test results
through the indexes declared here. Migrations are plain SQL, keyed by the version they produce.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from scheduler.kernel.outcome import Outcome

SCHEMA_VERSION = 7

metadata = sa.MetaData()

_ACTIVE_WHERE = "outcome IN ('queued', 'running')"

meta_table = sa.Table(
    "schedctl_meta",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tier", sa.String, nullable=False),
    sa.Column("kind", sa.String, nullable=False, default="pytest"),
    sa.Column("trigger", sa.String, nullable=False),
    sa.Column("slot", sa.DateTime(timezone=True)),
    sa.Column("idempotency_key", sa.String, unique=True),
    sa.Column("outcome", sa.String, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("exit_code", sa.Integer),
    sa.Column("ref", sa.String),
    sa.Column("sha", sa.String),
    sa.Column("source", sa.JSON, nullable=False, default=dict),
    sa.Column("runner", sa.String),
    sa.Column("host", sa.String),
    sa.Column("owner_pid", sa.Integer),
    # boot id + process start time: a pid alone is reused after a reboot or restart.
    sa.Column("owner_identity", sa.String),
    sa.Column("image", sa.String),
    sa.Column("image_id", sa.String),
    sa.Column("container_id", sa.String),
    sa.Column("gpus", sa.JSON, nullable=False, default=list),
    sa.Column("driver_version", sa.String),
    sa.Column("cuda_version", sa.String),
    sa.Column("markers", sa.String),
    sa.Column("argv", sa.JSON, nullable=False, default=list),
    sa.Column("counts", sa.JSON, nullable=False, default=dict),
    sa.Column("details", sa.JSON, nullable=False, default=dict),
    sa.Column("run_dir", sa.String),
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float),
    sa.Column("pruned_at", sa.DateTime(timezone=True)),
    sa.Index("ix_runs_tier_id", "tier", "id"),
    # One queued/running run per tier, across processes: the overlap rule in the database.
    # PostgreSQL's partial index takes the same WHERE from postgres_options().
    sa.Index(
        "ux_runs_active_tier",
        "tier",
        unique=True,
        sqlite_where=sa.text(_ACTIVE_WHERE),
    ),
    sa.Index("ix_runs_outcome", "outcome"),
)

# Every test nodeid once; the history tables refer to it by integer id (schema 6). A nodeid is
# ~60 bytes of text: stored per result and per index entry it made the store 218 MB per 1M
# results, most of it repeated text.
tests = sa.Table(
    "tests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("nodeid", sa.String, nullable=False, unique=True),
)

test_results = sa.Table(
    "test_results",
    metadata,
    # Clustered on (test, run, attempt): one test's history (schedctl test, flaky evidence,
    # p50/p90 durations) is one range of the table itself, every column at hand, no index to
    # keep beside it. ``seq`` is the result's position in its run (the order pytest reported):
    # it keeps results apart that share a test, run and attempt, and orders a run's results.
    sa.Column("test_id", sa.Integer, sa.ForeignKey("tests.id"), primary_key=True),
    sa.Column(
        "run_id",
        sa.Integer,
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("attempt", sa.Integer, primary_key=True, default=0, server_default="0"),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("final", sa.Boolean, nullable=False, default=True, server_default="1"),
    sa.Column("outcome", sa.String, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False, default=0.0),
    sa.Column("markers", sa.String, nullable=False, default=""),
    sa.Column("message", sa.Text),
    sa.Column("peak_rss_bytes", sa.BigInteger),
    sa.Column("rss_method", sa.String),
    sa.Column("cuda_peak_bytes", sa.BigInteger),
    sa.Column("owner", sa.String),
    # A run's results (schedctl show, alerts, metrics) and ON DELETE CASCADE from runs.
    sa.Index("ix_test_results_run", "run_id"),
    sqlite_with_rowid=False,
)

# Schema 7: a finishing run's results land here first, clustered by run (one run's rows are a
# few contiguous pages), not in ``test_results`` (a leaf page per test at 1M results: the insert
# a user waits for dirtied ~730 pages). ``merge_staged`` (:mod:`.staging`) moves every finished
# run's rows into ``test_results`` off the user's path (the daemon, `schedctl run` while its
# tests run, `schedctl store migrate`). Readers read both through the view
# ``test_results_all`` (:data:`test_results_all`); the rollups read the staged rows of the run.
test_results_staged = sa.Table(
    "test_results_staged",
    metadata,
    # test_results' columns in its order (an insert's values are in it), keyed run first.
    sa.Column("test_id", sa.Integer, sa.ForeignKey("tests.id"), nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("seq", sa.Integer, nullable=False),
    *(c._copy() for c in test_results.columns if not c.primary_key),
    sa.PrimaryKeyConstraint("run_id", "test_id", "attempt", "seq"),
    sqlite_with_rowid=False,
)
RESULT_COLUMNS = tuple(c.name for c in test_results.columns)
"""``test_results``' columns in its order: the staged table and the view list them so."""

# The view is not in :data:`metadata` (create_all would make it a table): its DDL is
# :func:`view_ddl`, run by every migrate (idempotent). Readers select from this Table object.
views = sa.MetaData()
test_results_all = sa.Table(
    "test_results_all",
    views,
    *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in test_results.columns),
)


def view_ddl(dialect_name: str) -> str:
    """The ``CREATE VIEW`` of :data:`test_results_all` for ``dialect_name`` (idempotent)."""
    names = ", ".join(RESULT_COLUMNS)
    body = (
        f"SELECT {names} FROM test_results UNION ALL "  # noqa: S608 -- our own columns
        f"SELECT {names} FROM test_results_staged"
    )
    if dialect_name == "postgresql":
        return f"CREATE OR REPLACE VIEW test_results_all AS {body}"
    return f"CREATE VIEW IF NOT EXISTS test_results_all AS {body}"


# PostgreSQL keeps a table in insertion order (by run), not clustered by its primary key: one
# test's history would be a heap page per result. This index holds what the history reads of a
# test's range (flaky verdicts, p50/p90 durations) in key order, so those are index-only scans
# (VACUUM, i.e. autovacuum, keeps the visibility map current). SQLite's table is that order.
_history_index = sa.Index(
    "ix_test_results_history",
    test_results.c.test_id,
    test_results.c.run_id,
).ddl_if(dialect="postgresql")  # INCLUDE (outcome, final, duration_s): postgres_options()


def postgres_options() -> None:
    """Attach the PostgreSQL-only index options; a PostgreSQL store calls this before any DDL.

    Named in the ``sa.Index(...)`` calls (``postgresql_where=``, ``postgresql_include=``) they
    would make SQLAlchemy import its PostgreSQL dialect, with every driver's module, into each
    process that imports this schema: ~2 MiB of an idle SQLite daemon's memory, ~45 ms of a
    command. Idempotent; SQLite's DDL ignores them.
    """
    runs_active = next(index for index in runs.indexes if index.name == "ux_runs_active_tier")
    runs_active.dialect_options["postgresql"]["where"] = sa.text(_ACTIVE_WHERE)
    _history_index.dialect_options["postgresql"]["include"] = ["outcome", "final", "duration_s"]


def _rollup(name: str, period: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        # Clustered on (period, test, tier): a window is a few contiguous ranges (its weeks and
        # edge days), and one run's rows land on the same few pages, whatever the history size.
        sa.Column(period, sa.String, primary_key=True),
        sa.Column("test_id", sa.Integer, sa.ForeignKey("tests.id"), primary_key=True),
        sa.Column("tier", sa.String, primary_key=True),
        sa.Column("runs", sa.Integer, nullable=False, default=0),
        sa.Column("passed", sa.Integer, nullable=False, default=0),
        sa.Column("failed", sa.Integer, nullable=False, default=0),
        sa.Column("flaky", sa.Integer, nullable=False, default=0),
        sa.Column("skipped", sa.Integer, nullable=False, default=0),
        sa.Column("duration_sum", sa.Float, nullable=False, default=0.0),
        sa.Column("duration_max", sa.Float, nullable=False, default=0.0),
        sa.Column("peak_rss_max", sa.BigInteger),
        sa.Column("first_run_id", sa.Integer, nullable=False),
        sa.Column("last_run_id", sa.Integer, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True)),
        sa.Column("last_at", sa.DateTime(timezone=True)),
        sqlite_with_rowid=False,
    )


# Per tier, test and UTC day (``day``: YYYY-MM-DD), and the same sums per ISO week (``week``:
# the YYYY-MM-DD of its Monday): what `schedctl tests` aggregates. Written in the transaction
# that writes the run's results (never rebuilt later, so never stale); only runs whose outcome is
# test evidence (Outcome.is_test_evidence) and only each test's final attempt. A window reads
# its whole weeks from test_weekly and only the days before its first Monday from test_daily.
test_daily = _rollup("test_daily", "day")
test_weekly = _rollup("test_weekly", "week")

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("test_id", sa.Integer, sa.ForeignKey("tests.id"), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("owner", sa.String),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("expiry_alerted_at", sa.DateTime(timezone=True)),
)

gpu_leases = sa.Table(
    "gpu_leases",
    metadata,
    sa.Column("gpu_uuid", sa.String, primary_key=True),
    sa.Column("gpu_index", sa.Integer, nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tier", sa.String, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
)

gpu_drains = sa.Table(
    "gpu_drains",
    metadata,
    sa.Column("gpu_uuid", sa.String, primary_key=True),
    sa.Column("gpu_index", sa.Integer, nullable=False),
    sa.Column("code", sa.String, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("clears", sa.Boolean, nullable=False),
    sa.Column("drained_at", sa.DateTime(timezone=True), nullable=False),
)

alerts_outbox = sa.Table(
    "alerts_outbox",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("sink", sa.String, nullable=False),
    sa.Column("fingerprint", sa.String, nullable=False),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String, nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_outbox_state_next", "state", "next_attempt_at"),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("fingerprint", sa.String, primary_key=True),
    sa.Column("tier", sa.String, nullable=False),
    sa.Column("failure_class", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("severity", sa.String, nullable=False),
    sa.Column("consecutive", sa.Integer, nullable=False, default=0),
    sa.Column("greens", sa.Integer, nullable=False, default=0),
    sa.Column("last_run_id", sa.Integer),
    sa.Column("failing", sa.JSON, nullable=False, default=list),
    sa.Column("external", sa.JSON, nullable=False, default=dict),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

image_builds = sa.Table(
    "image_builds",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("recipe", sa.String, nullable=False),
    sa.Column("image_id", sa.String, nullable=False),
    sa.Column("tag", sa.String),
    sa.Column("digest", sa.String),
    sa.Column("sha", sa.String),
    sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True)),
    sa.Index("ix_image_builds_recipe", "recipe", "removed_at"),
)

FINAL_OUTCOMES = [o.value for o in Outcome if o.is_final]
EVIDENCE_OUTCOMES = [o.value for o in Outcome if o.is_test_evidence]
_EVIDENCE_SQL = ", ".join(f"'{o}'" for o in EVIDENCE_OUTCOMES)
ACTIVE_OUTCOMES = [Outcome.QUEUED.value, Outcome.RUNNING.value]


# The tables as step 5 made them and as step 6 makes them: the steps keep their own SQL (the
# metadata above is the newest shape only).
_V5_TEST_DAILY = (
    "CREATE TABLE IF NOT EXISTS test_daily (nodeid VARCHAR NOT NULL, day VARCHAR NOT NULL, "
    "tier VARCHAR NOT NULL, runs INTEGER NOT NULL, passed INTEGER NOT NULL, failed INTEGER NOT "
    "NULL, flaky INTEGER NOT NULL, skipped INTEGER NOT NULL, duration_sum FLOAT NOT NULL, "
    "duration_max FLOAT NOT NULL, peak_rss_max BIGINT, first_run_id INTEGER NOT NULL, "
    "last_run_id INTEGER NOT NULL, first_at DATETIME, last_at DATETIME, "
    "PRIMARY KEY (nodeid, day, tier)) WITHOUT ROWID"
)
_V5_QUARANTINE = (
    "CREATE TABLE IF NOT EXISTS quarantine (nodeid VARCHAR NOT NULL PRIMARY KEY, reason TEXT "
    "NOT NULL, owner VARCHAR, created_at DATETIME NOT NULL, expires_at DATETIME, "
    "expiry_alerted_at DATETIME)"
)
_V6_TEST_RESULTS = (
    "CREATE TABLE test_results (test_id INTEGER NOT NULL REFERENCES tests (id), "
    "run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE, "
    "attempt INTEGER DEFAULT '0' NOT NULL, seq INTEGER NOT NULL, final BOOLEAN DEFAULT '1' NOT "
    "NULL, outcome VARCHAR NOT NULL, duration_s FLOAT NOT NULL, markers VARCHAR NOT NULL, "
    "message TEXT, peak_rss_bytes BIGINT, rss_method VARCHAR, cuda_peak_bytes BIGINT, "
    "owner VARCHAR, PRIMARY KEY (test_id, run_id, attempt, seq)) WITHOUT ROWID"
)
_SUMS = (
    "runs, passed, failed, flaky, skipped, duration_sum, duration_max, peak_rss_max, "
    "first_run_id, last_run_id, first_at, last_at"
)


def _rollup_sql(name: str, period: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {name} ({period} VARCHAR NOT NULL, test_id INTEGER NOT NULL "
        "REFERENCES tests (id), tier VARCHAR NOT NULL, runs INTEGER NOT NULL, passed INTEGER "
        "NOT NULL, failed INTEGER NOT NULL, flaky INTEGER NOT NULL, skipped INTEGER NOT NULL, "
        "duration_sum FLOAT NOT NULL, duration_max FLOAT NOT NULL, peak_rss_max BIGINT, "
        "first_run_id INTEGER NOT NULL, last_run_id INTEGER NOT NULL, first_at DATETIME, "
        f"last_at DATETIME, PRIMARY KEY ({period}, test_id, tier)) WITHOUT ROWID"
    )


MIGRATIONS: dict[int, Sequence[str]] = {
    # version -> SQL statements that bring version-1 to version; 1 is created by create_all.
    # They run before create_all on an older file, so a step states every table it needs.
    1: (),
    2: (
        "ALTER TABLE runs ADD COLUMN owner_identity VARCHAR",
        # Older databases may hold several active rows of a tier (crash leftovers): keep the
        # newest active, mark the rest interrupted, then enforce one active run per tier.
        "UPDATE runs SET outcome = 'interrupted', reason = 'superseded while migrating' "
        "WHERE outcome IN ('queued', 'running') AND id NOT IN "
        "(SELECT max(id) FROM runs WHERE outcome IN ('queued', 'running') GROUP BY tier)",
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_runs_active_tier ON runs (tier) "
        "WHERE outcome IN ('queued', 'running')",
    ),
    3: (
        "CREATE TABLE IF NOT EXISTS gpu_drains (gpu_uuid VARCHAR NOT NULL PRIMARY KEY, "
        "gpu_index INTEGER NOT NULL, code VARCHAR NOT NULL, reason TEXT NOT NULL, "
        "clears BOOLEAN NOT NULL, drained_at DATETIME NOT NULL)",
    ),
    # create_all (run first) already makes the table on an old file; the step states it anyway.
    4: (
        "CREATE TABLE IF NOT EXISTS image_builds (run_id INTEGER NOT NULL PRIMARY KEY "
        "REFERENCES runs (id) ON DELETE CASCADE, recipe VARCHAR NOT NULL, image_id VARCHAR "
        "NOT NULL, tag VARCHAR, digest VARCHAR, sha VARCHAR, built_at DATETIME NOT NULL, "
        "removed_at DATETIME)",
        "CREATE INDEX IF NOT EXISTS ix_image_builds_recipe ON image_builds (recipe, removed_at)",
    ),
    # Test history: attempts (reruns), memory, owners; test_daily and quarantine are new tables
    # (in their version-5 shape: step 6 reshapes them), test_daily is filled from the results
    # already stored.
    5: (
        _V5_TEST_DAILY,
        _V5_QUARANTINE,
        "ALTER TABLE test_results ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE test_results ADD COLUMN final BOOLEAN NOT NULL DEFAULT 1",
        "ALTER TABLE test_results ADD COLUMN peak_rss_bytes BIGINT",
        "ALTER TABLE test_results ADD COLUMN rss_method VARCHAR",
        "ALTER TABLE test_results ADD COLUMN cuda_peak_bytes BIGINT",
        "ALTER TABLE test_results ADD COLUMN owner VARCHAR",
        "CREATE INDEX IF NOT EXISTS ix_test_results_history "
        "ON test_results (nodeid, run_id, final, attempt, outcome)",
        "INSERT INTO test_daily (tier, nodeid, day, runs, passed, failed, flaky, skipped, "  # noqa: S608 -- our own enum values
        "duration_sum, duration_max, peak_rss_max, first_run_id, last_run_id, first_at, last_at) "
        "SELECT r.tier, t.nodeid, substr(coalesce(r.finished_at, r.queued_at), 1, 10), count(*), "
        "sum(t.outcome IN ('passed', 'xfailed', 'xpassed')), "
        "sum(t.outcome IN ('failed', 'error')), "
        "sum(t.outcome = 'flaky'), sum(t.outcome = 'skipped'), sum(t.duration_s), "
        "max(t.duration_s), NULL, min(r.id), max(r.id), "
        "min(coalesce(r.finished_at, r.queued_at)), max(coalesce(r.finished_at, r.queued_at)) "
        "FROM test_results t JOIN runs r ON r.id = t.run_id "
        f"WHERE r.outcome IN ({_EVIDENCE_SQL}) "
        "GROUP BY r.tier, t.nodeid, substr(coalesce(r.finished_at, r.queued_at), 1, 10)",
    ),
    # Nodeids normalised into `tests`; results clustered by (test, run, attempt, seq); weekly
    # rollups beside the daily ones. Each table is rebuilt under its name and copied row for
    # row (a result's v5 id becomes its seq: the order within its run is kept).
    6: (
        "CREATE TABLE IF NOT EXISTS tests (id INTEGER NOT NULL PRIMARY KEY, "
        "nodeid VARCHAR NOT NULL UNIQUE)",
        "INSERT INTO tests (nodeid) SELECT nodeid FROM test_results GROUP BY nodeid "
        "ORDER BY min(id)",
        "INSERT INTO tests (nodeid) SELECT DISTINCT nodeid FROM test_daily "
        "WHERE nodeid NOT IN (SELECT nodeid FROM tests)",
        "INSERT INTO tests (nodeid) SELECT nodeid FROM quarantine "
        "WHERE nodeid NOT IN (SELECT nodeid FROM tests)",
        "ALTER TABLE test_results RENAME TO test_results_v5",
        _V6_TEST_RESULTS,
        "INSERT INTO test_results (test_id, run_id, attempt, seq, final, outcome, duration_s, "
        "markers, message, peak_rss_bytes, rss_method, cuda_peak_bytes, owner) "
        "SELECT t.id, r.run_id, r.attempt, r.id, r.final, r.outcome, r.duration_s, r.markers, "
        "r.message, r.peak_rss_bytes, r.rss_method, r.cuda_peak_bytes, r.owner "
        "FROM test_results_v5 r JOIN tests t ON t.nodeid = r.nodeid",
        "DROP TABLE test_results_v5",
        "CREATE INDEX ix_test_results_run ON test_results (run_id)",
        "ALTER TABLE test_daily RENAME TO test_daily_v5",
        _rollup_sql("test_daily", "day"),
        f"INSERT INTO test_daily (day, test_id, tier, {_SUMS}) "  # noqa: S608 -- constants
        f"SELECT d.day, t.id, d.tier, {_SUMS} FROM test_daily_v5 d "
        "JOIN tests t ON t.nodeid = d.nodeid",
        "DROP TABLE test_daily_v5",
        _rollup_sql("test_weekly", "week"),
        f"INSERT INTO test_weekly (week, test_id, tier, {_SUMS}) "  # noqa: S608 -- constants
        "SELECT date(day, '-6 days', 'weekday 1'), test_id, tier, sum(runs), sum(passed), "
        "sum(failed), sum(flaky), sum(skipped), sum(duration_sum), max(duration_max), "
        "max(peak_rss_max), min(first_run_id), max(last_run_id), min(first_at), max(last_at) "
        "FROM test_daily GROUP BY date(day, '-6 days', 'weekday 1'), test_id, tier",
        "ALTER TABLE quarantine RENAME TO quarantine_v5",
        "CREATE TABLE quarantine (test_id INTEGER NOT NULL PRIMARY KEY REFERENCES tests (id), "
        "reason TEXT NOT NULL, owner VARCHAR, created_at DATETIME NOT NULL, "
        "expires_at DATETIME, expiry_alerted_at DATETIME)",
        "INSERT INTO quarantine (test_id, reason, owner, created_at, expires_at, "
        "expiry_alerted_at) SELECT t.id, q.reason, q.owner, q.created_at, q.expires_at, "
        "q.expiry_alerted_at FROM quarantine_v5 q JOIN tests t ON t.nodeid = q.nodeid",
        "DROP TABLE quarantine_v5",
    ),
    # The run-ordered staging table (test_results_staged) is new: create_all makes it and
    # migrate then creates the view (view_ddl); no row moves.
    7: (),
}
