"""``tests``: every test nodeid once, under an integer id the history tables refer to.

A nodeid is stored once, not per result: results, rollups and quarantine rows carry its id
(schema 6). Ids are given in the order tests are first seen and never change.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store import dialect
from scheduler.store.driver import Statement
from scheduler.store.schema import tests

# Bound parameters per IN list: below every engine's limit (SQLite's was 999 before 3.32).
CHUNK = 500
# Fewer nodeids than this are looked up with an IN list of their own size.
SMALL = 50
_BY_NODEID = sa.select(tests.c.nodeid, tests.c.id).where(
    tests.c.nodeid.in_([sa.bindparam(f"n{k}", "") for k in range(CHUNK)])
)


@functools.lru_cache(maxsize=SMALL)
def _by_nodeids(size: int) -> sa.Select[tuple[str, int]]:
    """The lookup of ``size`` nodeids, one constant per size (its compiled form is cached)."""
    return sa.select(tests.c.nodeid, tests.c.id).where(
        tests.c.nodeid.in_([sa.bindparam(f"n{k}", "") for k in range(size)])
    )


def known_ids(conn: Connection, nodeids: Collection[str]) -> dict[str, int]:
    """``{nodeid: id}`` of the ``nodeids`` the store has seen (others are left out)."""
    found: dict[str, int] = {}
    wanted = sorted(set(nodeids))
    if len(wanted) < SMALL:
        if not wanted:
            return {}
        rows = Statement(conn, _by_nodeids(len(wanted)), cached=True).rows(
            **{f"n{k}": nodeid for k, nodeid in enumerate(wanted)}
        )
        return {str(n): int(i) for n, i in rows}
    # A run's few hundred nodeids: one statement of CHUNK placeholders, compiled once, each
    # chunk padded with its last nodeid (a repeat in IN changes nothing).
    statement = Statement(conn, _BY_NODEID, cached=True)
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        chunk += [chunk[-1]] * (CHUNK - len(chunk))
        rows = statement.rows(**{f"n{k}": nodeid for k, nodeid in enumerate(chunk)})
        found.update((str(n), int(i)) for n, i in rows)
    return found


def ids_of(
    conn: Connection, nodeids: Sequence[str], known: Mapping[str, int] | None = None
) -> dict[str, int]:
    """``{nodeid: id}`` of every one of ``nodeids``, adding the new ones in the order given.

    ``known`` holds ids already read (a test's id never changes): only the others are looked up.

    On SQLite, call it in a transaction that already writes (holds the write lock). On a shared
    PostgreSQL store two hosts may add the same new nodeid at once: the insert skips a nodeid
    another transaction added (waiting for it to commit), and the lookup after it finds its id.
    """
    if known:
        cached = {n: known[n] for n in nodeids if n in known}
        rest = [n for n in nodeids if n not in cached]
        found = {**cached, **known_ids(conn, rest)} if rest else cached
    else:
        found = known_ids(conn, nodeids)
    new = [n for n in dict.fromkeys(nodeids) if n not in found]
    if new:
        insert = dialect.insert(conn, tests).on_conflict_do_nothing(index_elements=["nodeid"])
        conn.execute(insert, [{"nodeid": n} for n in new])
        found.update(known_ids(conn, new))
    return found
