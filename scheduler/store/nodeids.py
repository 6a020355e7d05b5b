"""``tests``: every test nodeid once, under an integer id the history tables refer to.

A nodeid is stored once, not per result: results, rollups and quarantine rows carry its id
(schema 6). Ids are given in the order tests are first seen and never change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store.schema import tests

# Bound parameters per IN list: below every engine's limit (SQLite's was 999 before 3.32).
CHUNK = 500


def known_ids(conn: Connection, nodeids: Collection[str]) -> dict[str, int]:
    """``{nodeid: id}`` of the ``nodeids`` the store has seen (others are left out)."""
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(nodeids))):
        query = sa.select(tests.c.nodeid, tests.c.id).where(tests.c.nodeid.in_(chunk))
        found.update((str(n), int(i)) for n, i in conn.execute(query))
    return found


def ids_of(conn: Connection, nodeids: Sequence[str]) -> dict[str, int]:
    """``{nodeid: id}`` of every one of ``nodeids``, adding the new ones in the order given.

    Call it in a transaction that already writes (holds the write lock), so two processes
    never add the same nodeid.
    """
    found = known_ids(conn, nodeids)
    new = [n for n in dict.fromkeys(nodeids) if n not in found]
    if new:
        conn.execute(tests.insert(), [{"nodeid": n} for n in new])
        found.update(known_ids(conn, new))
    return found


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]
