"""The merge of staged results (``test_results_staged``) into ``test_results``.

A run's finish writes its results into the run-ordered staging table (a few contiguous pages,
whatever the history size; see :data:`~.schema.test_results_staged`). This module moves every
finished run's staged rows into the table clustered by test, off the user's path: the daemon
after each finish and before each checkpoint on its timer, `schedctl run` while its tests run
(earlier runs' rows), `schedctl store migrate`. `schedctl store copy` reads through the view, so
it carries staged rows (into the target's ``test_results``).

The move is one transaction (the insert and the delete commit together or not at all: a crash
leaves every row where it was) and idempotent (a row already in ``test_results`` is left as it
is, and the delete takes the staged copy away all the same): run it as often as you like. Each
merge takes every finished run's rows, so staging stays small even when merges are missed.
Readers see both tables through the view ``test_results_all`` before and after.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa

from scheduler.store import dialect
from scheduler.store.schema import (
    ACTIVE_OUTCOMES,
    RESULT_COLUMNS,
    runs,
    test_results,
    test_results_staged,
)

__all__ = ["DELETE_MERGED", "merge_statement"]

_staged = test_results_staged.c
# Every run that is final: the finish writes its staged rows in the transaction that makes the
# run final, so these are all of them (an active run has none); stated all the same.
_FINISHED = _staged.run_id.in_(
    sa.select(runs.c.id).where(runs.c.outcome.not_in(ACTIVE_OUTCOMES)).scalar_subquery()
)


@functools.lru_cache(maxsize=4)
def merge_statement(dialect_name: str) -> sa.Insert:
    """The insert of every finished run's staged rows into ``test_results``, in its key order
    (each row lands beside the last), a row already there left alone (a rerun is harmless)."""
    select = (
        sa.select(*(_staged[name] for name in RESULT_COLUMNS))
        .where(_FINISHED)
        .order_by(_staged.test_id, _staged.run_id, _staged.attempt, _staged.seq)
    )
    insert = dialect.insert_for(dialect_name, test_results).from_select(
        list(RESULT_COLUMNS), select
    )
    return insert.on_conflict_do_nothing()  # type: ignore[no-any-return]


DELETE_MERGED = test_results_staged.delete().where(_FINISHED)
"""The staged rows :func:`merge_statement` has just copied (run in the same transaction)."""
