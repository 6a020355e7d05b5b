"""Which tests covered which files: a coverage.py data file recorded with ``--cov-context=test``.

The file is coverage.py's own SQLite database (tables ``file``, ``context``, ``line_bits``),
written by a run of the project under test: it is opened read-only and only looked at; an
unreadable or foreign file yields nothing (the coverage signal is optional, never required).
Contexts look like ``tests/test_x.py::test_y|run`` (pytest-cov); the phase suffix is dropped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("schedctl.store")

MAX_ROWS = 2_000_000


def files_by_test(path: Path, keep: Callable[[str], bool]) -> dict[str, set[str]]:
    """Node id -> the measured files it executed lines of, among those ``keep`` accepts."""
    if not path.is_file():
        return {}
    out: dict[str, set[str]] = {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        log.warning("coverage_data_unreadable", path=str(path), error=str(exc))
        return {}
    try:
        rows = conn.execute(
            "SELECT context.context, file.path FROM line_bits "
            "JOIN context ON context.id = line_bits.context_id "
            "JOIN file ON file.id = line_bits.file_id LIMIT ?",
            (MAX_ROWS,),
        )
        for context, file_path in rows:
            if not isinstance(context, str) or not isinstance(file_path, str) or not context:
                continue
            if keep(file_path):
                out.setdefault(context.rsplit("|", 1)[0], set()).add(file_path)
    except sqlite3.Error as exc:
        log.warning("coverage_data_unreadable", path=str(path), error=str(exc))
        return {}
    finally:
        conn.close()
    return out
