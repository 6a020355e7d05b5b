"""frozen_heap: the start-up heap leaves the full collections for a block, then comes back."""

from __future__ import annotations

import gc

import pytest

from scheduler.kernel.heap import frozen_heap


@pytest.mark.parametrize("collect", [True, False])
def test_frozen_heap_freezes_for_the_block_and_gives_back(collect: bool) -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap(collect=collect):
        assert gc.get_freeze_count() > 1_000  # this process's imported modules, at least
    assert gc.get_freeze_count() == 0


def test_frozen_heap_gives_back_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), frozen_heap(collect=False):
        raise RuntimeError("query failed")
    assert gc.get_freeze_count() == 0
