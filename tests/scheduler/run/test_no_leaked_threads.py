"""CLI-style runs (each with its own cancel event, as ``schedctl run`` has) leave no thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import RunRequest
from tests.scheduler.conftest import FakeDispatcher


def test_twenty_cli_runs_leave_no_thread_behind(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    dispatcher = fake_dispatcher(make_config())
    dispatcher.run(RunRequest("hourly"), threading.Event())  # warm-up: lazily built parts
    before = {t.ident for t in threading.enumerate()}
    for _ in range(20):
        record = dispatcher.run(RunRequest("hourly"), threading.Event())
        assert record.outcome is Outcome.PASSED
    leaked = [t.name for t in threading.enumerate() if t.ident not in before]
    assert leaked == []


def test_the_callers_cancel_event_stops_the_run(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> None:
    """The event a caller passes is the run's own: set before the run starts, it cancels it."""
    cancel = threading.Event()
    cancel.set()
    record = fake_dispatcher(make_config()).run(RunRequest("hourly"), cancel)
    assert record.outcome is Outcome.CANCELLED
