"""The shape shared by listeners that turn a finished run into outbox rows.

A subclass says which sinks it feeds (:meth:`FinishedRunListener.accepts`) and what a finished
run enqueues (:meth:`FinishedRunListener.on_finished`); this base filters the events, wakes the
delivery worker when rows were written, and keeps every failure out of the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from scheduler.alerts.sinks.base import Sink
from scheduler.kernel.clock import utcnow
from scheduler.kernel.events import Event, RunFinished
from scheduler.store.engine import Store

log = structlog.get_logger("schedctl.alerts")


class FinishedRunListener:
    """Listener for :class:`RunFinished`; never raises."""

    failure_event = "alert_listener_failed"
    """The log event of a failure in :meth:`on_finished`."""

    def __init__(
        self,
        store: Store,
        sinks: Sequence[Sink],
        *,
        public_url: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.sinks = [s for s in sinks if self.accepts(s)]
        self.public_url = public_url
        self.clock = clock
        self.on_enqueued = on_enqueued

    def accepts(self, sink: Sink) -> bool:
        """Whether this listener's alerts go to ``sink``."""
        return True

    def on_finished(self, event: RunFinished) -> None:
        raise NotImplementedError

    def __call__(self, event: Event) -> None:
        if not isinstance(event, RunFinished):
            return
        try:
            self.on_finished(event)
        except Exception:
            log.exception(self.failure_event, run_id=event.run_id)

    def enqueued(self, count: int) -> None:
        """Wake the delivery worker when ``count`` rows were written."""
        if count and self.on_enqueued is not None:
            self.on_enqueued()
