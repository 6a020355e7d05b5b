"""The state directory and run directories: private, and never reused.

Run ids come from the database. A database that starts again from run 1 (deleted, truncated, a
new ``state_dir`` pointing at an old tree) would hand a new run an old ``runs/N`` whose results
file still holds the old run's lines. So a run directory is always created, never found, and a
new database next to a ``runs/`` that already holds run directories is refused -- unless the
operator says ``--force``, which moves the old tree aside.
"""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import UsageError

STATE_MODE = 0o700


def prepare_state_dir(state_dir: Path, db_path: Path | None, *, force: bool = False) -> Path | None:
    """Create ``state_dir`` 0700 (whatever the umask) and check ``runs/`` against the database
    file (``db_path``; ``None`` for a shared database, whose run ids never restart).

    Returns where an old ``runs/`` was moved with ``force``, else ``None``.

    Raises:
        UsageError: the database is new but ``runs/`` holds run directories (and no ``force``).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, STATE_MODE)
    runs = state_dir / "runs"
    if db_path is None or db_path.exists() or not _holds_runs(runs):
        return None
    if not force:
        raise UsageError(
            f"{db_path} does not exist but {runs} holds run directories of an earlier database: "
            "a new database would reuse their ids and mix old results into new runs. Move "
            f"{runs} aside (or restore the database), or pass --force to move it aside now"
        )
    aside = runs.with_name(f"runs.before-{utcnow():%Y%m%dT%H%M%S.%fZ}")
    runs.rename(aside)
    return aside


def _holds_runs(runs: Path) -> bool:
    try:
        return any(entry.name.isdigit() for entry in os.scandir(runs))
    except (FileNotFoundError, NotADirectoryError):
        return False


def create_run_dir(path: Path) -> None:
    """Create ``path`` fresh; ``FileExistsError`` if anything is already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=STATE_MODE)
