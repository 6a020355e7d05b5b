"""Daemon service ``alerts-catch-up``: applies finished runs that no listener saw.

It runs at daemon start and then every ``interval_s``, so a failure from ``schedctl run``
without a daemon, or one finished just before a crash, still alerts (see
:meth:`~scheduler.alerts.recorder.AlertRecorder.catch_up`).
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from scheduler.alerts.recorder import AlertRecorder

log = structlog.get_logger("schedctl.alerts.catchup")


class CatchUp:
    """A thread that calls ``recorder.catch_up()`` now and every ``interval_s``."""

    name = "alerts-catch-up"

    def __init__(self, recorder: AlertRecorder, interval_s: float = 30.0) -> None:
        self.recorder = recorder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, daemon: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            try:
                applied = self.recorder.catch_up()
            except Exception:
                log.exception("alert_catch_up_failed")
            else:
                if applied:
                    log.info("alert_catch_up", runs=applied)
            if self._stop.wait(self.interval_s):
                return
