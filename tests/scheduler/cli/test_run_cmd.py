"""`schedctl run` pauses the cyclic garbage collector while it prepares the run (run_cmd's
_StartupHeap): off during start-up, the start-up heap frozen once the run is recorded, and the
collector given back as it was found -- also to a process that runs the command in itself."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.cli.run_cmd import _StartupHeap
from scheduler.kernel.events import Event, RunQueued, RunStarted


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


def test_a_run_in_this_process_settles_when_the_run_is_recorded_and_leaves_gc_as_found(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    from scheduler.run.dispatch import Dispatcher

    gc.enable()
    seen: list[tuple[bool, int]] = []
    emit = Dispatcher.add_listener

    def add_listener(self: Dispatcher, listener: Callable[[Event], None]) -> None:
        def spy(event: Event) -> None:
            if isinstance(event, RunQueued):
                seen.append((gc.isenabled(), gc.get_freeze_count()))
            listener(event)
            if isinstance(event, (RunQueued, RunStarted)):
                seen.append((gc.isenabled(), gc.get_freeze_count()))

        emit(self, spy)

    monkeypatch.setattr(Dispatcher, "add_listener", add_listener)
    config = write_config()
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "hourly", "--json"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 3
    assert seen[0] == (False, 0)  # paused while the run was prepared
    assert seen[1][0] and seen[1][1] > 0  # settled when the run was recorded
    assert seen[2][0] and seen[2][1] > 0  # and so it stays while the run runs
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_run_submitted_to_a_daemon_is_followed_with_the_collector_back(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, collector: None
) -> None:
    """The daemon runs it; this process follows its events for as long as it lasts."""
    from scheduler.cli import run_cmd
    from scheduler.cli.app import AppContext

    gc.enable()
    followed: list[tuple[bool, int]] = []

    def follow(*args: object, **kwargs: object) -> None:
        followed.append((gc.isenabled(), gc.get_freeze_count()))

    monkeypatch.setattr(run_cmd, "_run_in_daemon", follow)
    app = AppContext(config_path=str(write_config()))
    heap = _StartupHeap()
    found: tuple[int, Any] = (4242, object())  # the daemon's pid and client: never used
    run_cmd._run_command(
        app,
        "hourly",
        None,
        None,
        None,
        None,
        True,
        False,
        found,
        None,
        heap,
    )
    assert followed == [(True, 0)]
