"""The state directory's lock: one daemon per state dir, and who holds it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from scheduler.kernel.errors import DaemonLocked


class StateLock:
    """An exclusive flock on ``<state_dir>/daemon.lock``, holding our pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fh: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise DaemonLocked(
                f"another schedctl daemon (pid {holder}) already runs on state dir "
                f"{self.path.parent}; stop it first or use another state_dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @staticmethod
    def holder(state_dir: Path) -> int | None:
        """The pid of the daemon holding the lock, or ``None`` when no daemon runs."""
        path = state_dir / "daemon.lock"
        if not path.exists():
            return None
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                text = fh.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None
