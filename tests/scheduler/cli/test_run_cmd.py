"""`schedctl run` pauses the cyclic garbage collector while it starts the run (run_cmd's
_StartupHeap): off during start-up, the start-up heap frozen once the run has started, and the
collector given back as it was found -- also to a process that runs the command in itself."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.cli.run_cmd import _StartupHeap
from scheduler.kernel.events import Event, RunStarted


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector, restored whatever a test leaves."""
    enabled = gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_up_is_not_collected_then_frozen_then_given_back(collector: None) -> None:
    gc.enable()
    heap = _StartupHeap()
    assert not gc.isenabled()
    made = weakref.ref(Cycle())
    assert made() is not None  # start-up garbage waits: no pass runs
    heap.settle()
    assert gc.isenabled() and gc.get_freeze_count() > 0
    gc.collect()
    assert made() is not None  # frozen with the start-up heap: never walked
    later = weakref.ref(Cycle())
    gc.collect()
    assert later() is None  # what the run makes is collected as usual
    heap.release()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.collect()
    assert made() is None  # given back: the caller's collector reclaims it


def test_a_collector_that_was_off_stays_off_and_a_freeze_found_stays(collector: None) -> None:
    gc.disable()
    gc.freeze()
    found = gc.get_freeze_count()
    heap = _StartupHeap()
    heap.settle()
    assert not gc.isenabled()
    heap.release()
    assert not gc.isenabled()
    assert gc.get_freeze_count() >= found  # the caller's own freeze is not undone


def test_a_run_in_this_process_settles_when_the_run_starts_and_leaves_gc_as_found(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    from scheduler.run.dispatch import Dispatcher

    gc.enable()
    seen: list[tuple[bool, int]] = []
    emit = Dispatcher.add_listener

    def add_listener(self: Dispatcher, listener: Callable[[Event], None]) -> None:
        def spy(event: Event) -> None:
            listener(event)
            if isinstance(event, RunStarted):
                seen.append((gc.isenabled(), gc.get_freeze_count()))

        emit(self, spy)

    monkeypatch.setattr(Dispatcher, "add_listener", add_listener)
    config = write_config()
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "hourly", "--json"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    enabled, frozen = seen[0]
    assert enabled and frozen > 0  # settled when the run started
    assert gc.isenabled() and gc.get_freeze_count() == 0
