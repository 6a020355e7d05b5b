"""What the dispatcher needs of the source, the GPU pool and the store (no implementation code).

:mod:`scheduler.source` and :mod:`scheduler.gpu` implement these; tests pass fakes. The store's
part (:class:`RunStore`) is implemented by the full :class:`~scheduler.store.engine.Store` and by
the sqlite3 writer (:class:`~scheduler.store.writer.SqliteWriter`) that ``schedctl run`` uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runners.base import GpuDevice

if TYPE_CHECKING:
    from scheduler.store.engine import Store
    from scheduler.store.records import QuarantineRow, RunRecord, TestResultRow


class CheckoutLike(Protocol):
    """A tree at a known commit, ready to be used as a run's workdir."""

    @property
    def path(self) -> Path: ...

    @property
    def sha(self) -> str | None: ...

    @property
    def ref(self) -> str | None: ...

    def provenance(self) -> dict[str, Any]: ...


class SourceLike(Protocol):
    """Resolves refs and hands out per-run trees (see :mod:`scheduler.source`)."""

    def resolve(self, ref: str | None) -> str | None: ...

    def checkout(self, ref: str | None, run_id: str) -> CheckoutLike: ...

    def release(self, checkout: Any, *, keep: bool) -> None:
        """Takes back what :meth:`checkout` returned (``Any``: each source its own type)."""

    def changes_between(self, old_sha: str, new_sha: str, limit: int = 50) -> list[str]: ...


class LeaseLike(Protocol):
    """GPUs held by one run."""

    @property
    def run_id(self) -> int: ...

    @property
    def devices(self) -> Sequence[GpuDevice]: ...

    @property
    def waited_s(self) -> float: ...

    def provenance(self) -> dict[str, Any]: ...


class GpuProcessLike(Protocol):
    """A process holding a context on a GPU."""

    @property
    def pid(self) -> int: ...

    def to_json(self) -> dict[str, Any]: ...


class GpuPoolLike(Protocol):
    """Hands out exact GPUs to runs (see :mod:`scheduler.gpu`)."""

    def acquire(
        self,
        run_id: int,
        tier: str,
        count: int | str,
        priority: int,
        wait_s: float,
        cancel: threading.Event,
        preempts: Collection[str] = (),
    ) -> LeaseLike: ...

    def release(self, run_id: int) -> None: ...

    def set_preempter(self, preempter: Callable[[int, str], bool] | None) -> None:
        """Who stops a run whose GPUs a preempting tier needs (``(run_id, reason) -> asked``)."""

    def evidence(self, uuids: Sequence[str]) -> dict[str, Any]:
        """Readings and health counters of these GPUs now, as JSON (hang evidence)."""
        ...

    def set_notify(self, notify: Callable[[Any], None] | None) -> None:
        """Where the health check's drain events go (the dispatcher's event bus)."""

    def leaked_processes(self, lease: Any, settle_s: float = 2.0) -> Sequence[GpuProcessLike]:
        """Processes on the lease's GPUs after the run (``Any``: the pool's own lease type)."""


class RunStore(Protocol):
    """What a run's lifecycle (dispatcher, ledger, crash recovery) reads and writes.

    The methods are :class:`~scheduler.store.engine.Store`'s; :meth:`full_store` gives the
    full store for what lies beyond a run's lifecycle (GPU leases, image builds).
    """

    location: str

    def create_run(
        self, run_dir_for: Callable[[int], str] | None = None, **values: Any
    ) -> int | None: ...

    def update_run(self, run_id: int, **values: Any) -> None: ...

    def finish_run(
        self, run_id: int, results: Iterable[TestResultRow] = (), **values: Any
    ) -> RunRecord: ...

    def rehearse_run(self, row: Mapping[str, Any], running: Mapping[str, Any]) -> None: ...

    def get_run(self, run_id: int) -> RunRecord: ...

    def get_run_by_key(self, key: str) -> RunRecord | None: ...

    def active_runs(self, tier: str | None = None) -> list[RunRecord]: ...

    def quarantine_list(self) -> list[QuarantineRow]: ...

    def release_dead_leases(self) -> int: ...

    def checkpoint(self, min_wal_bytes: int = 0) -> tuple[int, int] | None: ...

    def merge_staged(self) -> int: ...

    def full_store(self) -> Store: ...
