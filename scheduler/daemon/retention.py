"""Retention: delete old run directories (logs, results, artifacts); the run rows stay.

Passed runs keep their files for ``retention.passed`` (default 7 days), every other finished
run for ``retention.failed`` (default 30 days), counted from when the run finished. A pruned
run's row gets ``pruned_at``, so history, flake statistics and alerts are unaffected and the CLI
can say why a log is gone. Old per-run git worktrees go the same way when the source keeps them.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from scheduler.config import Config
from scheduler.kernel.clock import utcnow
from scheduler.store.engine import Store

if TYPE_CHECKING:
    from scheduler.daemon.scheduler import Daemon

log = structlog.get_logger("schedctl.retention")

INTERVAL_S = 6 * 3600.0
BATCH = 500


@dataclass(frozen=True)
class PruneReport:
    runs: list[int]
    bytes_freed: int
    worktrees: int


class Pruner:
    """One pass of retention over a store; ``clock`` is injected for tests."""

    def __init__(
        self,
        config: Config,
        store: Store,
        source: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.clock = clock

    def prune(self) -> PruneReport:
        now = self.clock()
        keep_passed = timedelta(seconds=self.config.retention.passed)
        keep_failed = timedelta(seconds=self.config.retention.failed)
        pruned: list[int] = []
        freed = 0
        while True:
            batch = self._due(now - keep_passed, now - keep_failed)
            for run_id, run_dir in batch:
                freed += self._remove(Path(run_dir))
                self.store.update_run(run_id, pruned_at=now)
                pruned.append(run_id)
            if len(batch) < BATCH:
                break
        worktrees = self._prune_worktrees(keep_failed)
        if pruned or worktrees:
            log.info("retention_pruned", runs=len(pruned), bytes=freed, worktrees=worktrees)
        return PruneReport(pruned, freed, worktrees)

    def _due(self, passed_before: datetime, failed_before: datetime) -> list[tuple[int, str]]:
        # A shared store holds other hosts' runs: their run dirs are on their disks.
        host = self.config.host_name if self.config.store.is_postgres else None
        return self.store.prunable_runs(passed_before, failed_before, BATCH, host=host)

    def _remove(self, run_dir: Path) -> int:
        """Delete one run dir (only inside our runs dir); returns the bytes it held."""
        runs_dir = self.config.runs_dir.resolve()
        target = run_dir.resolve()
        if target.parent != runs_dir or not target.is_dir():
            return 0
        size = 0
        for path in target.rglob("*"):
            with contextlib.suppress(OSError):  # files may vanish while we count
                if path.is_file() and not path.is_symlink():
                    size += path.stat().st_size
        shutil.rmtree(target, ignore_errors=True)
        return size

    def _prune_worktrees(self, older_than: timedelta) -> int:
        prune = getattr(self.source, "prune_worktrees", None)
        if not callable(prune):
            return 0
        try:
            return int(prune(older_than=older_than))
        except Exception as exc:
            log.warning("worktree_prune_failed", error=str(exc))
            return 0


class RetentionService:
    """Runs :meth:`Pruner.prune` at daemon start and then every ``interval_s``."""

    name = "retention"

    def __init__(self, pruner: Pruner, interval_s: float = INTERVAL_S) -> None:
        self.pruner = pruner
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, daemon: Daemon) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pruner.prune()
            except Exception:
                log.exception("retention_failed")
            self._stop.wait(self.interval_s)
