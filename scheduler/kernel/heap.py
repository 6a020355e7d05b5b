"""Keep a process's start-up heap out of the cyclic garbage collector's full passes."""

from __future__ import annotations

import gc


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
