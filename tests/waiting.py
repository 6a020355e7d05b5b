"""Waiting in tests: on the condition that matters, or on a clock the test moves itself.

A test never sleeps and hopes. Where the code under test takes a ``clock``, inject a fake one
and move it (:class:`FakeClock`, :class:`FakeMonotonic`); where something happens in another
thread or process, :func:`wait_for` the condition the assertion needs. The timeout of
``wait_for`` is a ceiling for a broken build, not a guess at how long things take: a working
build returns as soon as the condition holds, however loaded the machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.02


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Return ``predicate()``'s first truthy value; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_S)  # the poll interval of this helper, not a wait for an outcome


class FakeClock:
    """Aware UTC wall-clock time that moves only when the test calls :meth:`advance`.

    For ``clock: Callable[[], datetime]`` parameters (alerts, outbox, source, retention).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


class FakeMonotonic:
    """Monotonic seconds that move only when the test calls :meth:`advance`.

    For ``clock: Callable[[], float]`` parameters (``GpuPool``): deadlines and sampling
    intervals measured on it pass exactly when the test says, never because the machine is slow.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now
