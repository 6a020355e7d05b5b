"""The daemon's run rows written through the sqlite3 writer, beside its full store.

A cron fire writes two statements before ``RunStarted`` (the queued row with its run dir, then
``running``); through SQLAlchemy Core they cost ~1.3 ms of CPU per fire, through
:class:`~scheduler.store.writer.SqliteWriter` (the same statements, generated from the Core
ones, contract-tested against the store) about a quarter of that, and five tiers firing in the
same second pay it five times over under one GIL. So on a SQLite store the daemon's
dispatcher writes run rows (open, start, finish) through the writer, as ``schedctl run`` does,
and reads them back through it, and reads and writes everything else through the full store.

The writer's transactions queue on the full store's own lock of this process's writers
(``Store.begin(write=True)``), so a run row and, say, a GPU lease written at the same moment
wait for each other on that lock rather than meeting SQLite's busy handler, which sleeps
1, 2, 5, 10 ... ms between tries. The writer's connection is opened by the start-up's
rehearsal (:meth:`~scheduler.run.dispatch.Dispatcher.warm_up`), so no fire pays for it. A
store whose schema is not the writer's (:func:`~scheduler.store.writer.open_writer` says
``None``) and a PostgreSQL store are used as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from scheduler.kernel.errors import StoreError

if TYPE_CHECKING:
    from scheduler.run.protocols import RunStore
    from scheduler.store.engine import Store
    from scheduler.store.records import QuarantineRow, RunRecord, TestResultRow
    from scheduler.store.writer import SqliteWriter


class DaemonRunStore:
    """A :class:`~scheduler.run.protocols.RunStore`: run rows through the writer, the rest
    through ``store`` (every other attribute is the store's)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.location = store.location
        self._lock: threading.RLock = store._writes
        self._writer: SqliteWriter | None = None
        self._opened = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def writer(self) -> SqliteWriter | None:
        """The writer on the store's file, opened on first use (``None``: use the store)."""
        if not self._opened:
            with self._lock:
                if not self._opened:
                    from scheduler.store.writer import open_writer

                    self._writer = open_writer(self.store.path)
                    self._opened = True
        return self._writer

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            self._opened = False

    def full_store(self) -> Store:
        return self.store

    def create_run(
        self, run_dir_for: Callable[[int], str] | None = None, **values: Any
    ) -> int | None:
        writer = self.writer()
        if writer is None:
            return self.store.create_run(run_dir_for, **values)
        with self._lock:
            return writer.create_run(run_dir_for, **values)

    def update_run(self, run_id: int, **values: Any) -> None:
        writer = self.writer()
        if writer is None:
            self.store.update_run(run_id, **values)
            return
        with self._lock:
            writer.update_run(run_id, **values)

    def finish_run(
        self, run_id: int, results: Iterable[TestResultRow] = (), **values: Any
    ) -> RunRecord:
        writer = self.writer()
        if writer is None:
            record = self.store.finish_run(run_id, results, **values)
        else:
            with self._lock:
                record = writer.finish_run(run_id, results, **values)
        self.merge_staged()
        return record

    def merge_staged(self) -> int:
        """Finished runs' staged results into ``test_results`` (:mod:`.staging`), after each
        finish (nobody waits on a daemon's run) and on the checkpoint timer. Best effort: on
        failure the rows stay staged, read the same, and the timer's next tick merges them."""
        writer = self.writer()
        try:
            if writer is None:
                return self.store.merge_staged()
            with self._lock:
                return writer.merge_staged()
        except StoreError:
            return 0

    def rehearse_run(self, row: Mapping[str, Any], running: Mapping[str, Any]) -> None:
        """Open the writer at start-up (its statements need no compiling); without one,
        rehearse the store's."""
        if self.writer() is None:
            self.store.rehearse_run(row, running)

    # A run's own reads (the ledger's, recovery's, a fire's after a refused insert) go through
    # the writer's connection too: the same answers (contract-tested), a fraction of the CPU.

    def get_run(self, run_id: int) -> RunRecord:
        writer = self.writer()
        return self.store.get_run(run_id) if writer is None else writer.get_run(run_id)

    def get_run_by_key(self, key: str) -> RunRecord | None:
        writer = self.writer()
        return self.store.get_run_by_key(key) if writer is None else writer.get_run_by_key(key)

    def active_runs(self, tier: str | None = None) -> list[RunRecord]:
        writer = self.writer()
        return self.store.active_runs(tier) if writer is None else writer.active_runs(tier)

    def quarantine_list(self) -> list[QuarantineRow]:
        writer = self.writer()
        return self.store.quarantine_list() if writer is None else writer.quarantine_list()


def daemon_run_store(store: Store) -> RunStore:
    """What the daemon's dispatcher writes run rows through: :class:`DaemonRunStore` on a
    SQLite store, the store itself on PostgreSQL."""
    if store.is_postgres:
        return store
    return DaemonRunStore(store)
