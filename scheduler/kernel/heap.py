"""Keep a process's start-up heap out of the cyclic garbage collector's full passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_heap(*, collect: bool = True) -> None:
    """Move every object alive now out of the cyclic collector's reach.

    A process that has imported SQLAlchemy, pydantic and APScheduler holds ~50,000-70,000
    long-lived objects; a full collection walks them all (tens of ms, every other thread held
    by the GIL) and lands on whatever allocates at that moment: a fire, a history query, a
    page. Frozen, they are never walked again; what comes later still is. ``collect`` first
    (the documented recipe) for a long-lived process; a one-shot command skips it, as a full
    pass is the very cost it avoids, and leaks at most what its imports left as garbage.
    """
    if collect:
        gc.collect()
    gc.freeze()


@contextmanager
def frozen_heap(*, collect: bool = True) -> Iterator[None]:
    """:func:`freeze_heap` for the span of a block, given back at its end: a command run in
    another process's interpreter (a test's CliRunner) leaves that process's collector as it
    found it."""
    freeze_heap(collect=collect)
    try:
        yield
    finally:
        gc.unfreeze()
