"""Shared by the runner tests and the tests of code that wraps a runner (the smoketest launches).

:class:`OffsetClock` is the runners' injectable monotonic clock with an offset the test moves:
real time still flows (a stop's grace and the pre-stop wait stay real), but a deadline or a
silence is reached when the test moves the clock -- once the run is where the test wants it --
not when a slow machine gets there. :class:`Background` runs a run in a thread meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class OffsetClock:
    """``time.monotonic`` plus an offset that only :meth:`advance` moves (forward)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds


class Background(Generic[T]):
    """``start()`` in a thread, so the test can look at a run while it lives."""

    def __init__(
        self, start: Callable[[threading.Event], T], cancel: threading.Event | None = None
    ) -> None:
        self.cancel = cancel or threading.Event()
        self._results: list[T] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self._thread.start()

    def _run(self, start: Callable[[threading.Event], T]) -> None:
        try:
            self._results.append(start(self.cancel))
        except BaseException as exc:  # handed to the test by result()
            self._errors.append(exc)

    def result(self, timeout_s: float = 240) -> T:
        """The run's result; a generous ceiling: a loaded docker engine answers slowly."""
        self._thread.join(timeout_s)
        if self._errors:
            raise self._errors[0]
        assert self._results, f"the run did not end within {timeout_s}s"
        return self._results[0]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def text_of(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


__all__ = ["Background", "OffsetClock", "alive", "text_of"]
