"""An experiment metrics log in SQLite: (run, step, name, value) rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import List, Optional, Tuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    run   TEXT    NOT NULL,
    step  INTEGER NOT NULL,
    name  TEXT    NOT NULL,
    value REAL    NOT NULL,
    PRIMARY KEY (run, step, name)
)
"""


class MetricsLog:
    """Append metrics, then query curves and the best step of a run."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path))
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, run: str, step: int, **values: float) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                [(run, step, name, float(v)) for name, v in values.items()],
            )

    def curve(self, run: str, name: str) -> List[Tuple[int, float]]:
        rows = self._db.execute(
            "SELECT step, value FROM metrics WHERE run = ? AND name = ? ORDER BY step", (run, name)
        )
        return [(int(s), float(v)) for s, v in rows]

    def best(self, run: str, name: str, mode: str = "min") -> Optional[Tuple[int, float]]:
        order = "ASC" if mode == "min" else "DESC"
        row = self._db.execute(
            f"SELECT step, value FROM metrics WHERE run = ? AND name = ? ORDER BY value {order}, step LIMIT 1",
            (run, name),
        ).fetchone()
        return (int(row[0]), float(row[1])) if row else None

    def runs(self) -> List[str]:
        return [r for (r,) in self._db.execute("SELECT DISTINCT run FROM metrics ORDER BY run")]
