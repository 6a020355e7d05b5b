"""How schedctl opens a SQLite store file: the settings every connection to it gets.

Shared by :class:`~.engine.Store` (SQLAlchemy's connect event) and :mod:`.writer` (``sqlite3``):
the same busy timeout, WAL, page cache and checkpoint thresholds whichever opens the file. No
SQLAlchemy here.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

BUSY_TIMEOUT_S = 15.0
MMAP_BYTES = 1 << 30
CACHE_KIB = 64 * 1024
# SQLite's automatic checkpoint runs in the commit that crosses it: a run's results touch a page
# per test (each test's history is one range), ~500 pages for a 500-test run, so at SQLite's
# default (1,000 pages) every other insert paid a checkpoint (write-back and fsync), at 10,000
# one in ~15 did (p99 ~250 ms on a 1M-result store). Checkpoints run off the insert path
# instead (:meth:`Store.checkpoint`: the daemon's timer, the end of a CLI run); this is only the
# backstop for a process that writes a lot and never checkpoints (~128 MiB of WAL).
WAL_AUTOCHECKPOINT_PAGES = 32_768
# After a checkpoint has let the WAL start over, SQLite truncates the file to this size.
WAL_SIZE_LIMIT_BYTES = 64 << 20


def configure_connection(cursor: Any) -> None:
    """Apply the store's pragmas on a new DB-API connection's ``cursor``."""
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    ensure_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # History queries read tens of thousands of index entries per call: map the file (reads
    # without a syscall and a copy per page) and keep a 64 MiB page cache per connection.
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")


def ensure_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent), retrying while another process holds the lock.

    SQLite answers ``SQLITE_BUSY`` to a journal-mode change without calling the busy handler,
    so two processes opening a fresh file at once need this loop, not ``busy_timeout``.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
