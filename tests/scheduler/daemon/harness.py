"""A real daemon process for tests and bench/bench_restart.py, with seconds-level slots.

It is ``schedctl daemon`` assembled the same way (same dispatcher, services, lock, recovery,
signals), except that every scheduled tier fires on ``CronTrigger(second="*/N")`` through the
daemon's ``trigger_for`` seam, so restarts and missed slots can be exercised in seconds
instead of minutes. It also appends every dispatcher event to a JSON-lines file, so a test can
see the alert events (``SlotMissed``) a separate process emitted.

Usage: python -m tests.scheduler.daemon.harness CONFIG EVERY_S EVENTS_FILE
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from datetime import tzinfo
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from scheduler.config import TierConfig, load_config
from scheduler.daemon.assembly import build_dispatcher, build_services
from scheduler.daemon.scheduler import Daemon, wait_for_signal
from scheduler.kernel.events import Event
from scheduler.logs import configure
from scheduler.store.connect import open_store
from scheduler.store.daemon_store import daemon_run_store


class EventLog:
    """Appends each event as one JSON line: its class name and plain fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        fields: dict[str, Any] = {
            f.name: getattr(event, f.name)
            for f in dataclasses.fields(event)
            if f.name not in ("record",)
        }
        line = json.dumps({"event": type(event).__name__, **fields}, default=str)
        with self._lock, self.path.open("a") as fh:
            fh.write(line + "\n")


def main(argv: list[str]) -> None:
    config_path, every_s, events_path = argv
    configure(json_logs=True, level="info")
    config = load_config(config_path)
    store = open_store(config)  # the SQLite file, or store.url
    dispatcher = build_dispatcher(config, daemon_run_store(store))  # as `schedctl daemon`
    dispatcher.add_listener(EventLog(Path(events_path)))

    def every(_tier: TierConfig, tz: tzinfo) -> Any:
        return CronTrigger(second=f"*/{int(every_s)}", timezone=tz)

    services = build_services(config, store, dispatcher)
    daemon = Daemon(config, store, dispatcher, services, trigger_for=every)
    daemon.start()
    stop = threading.Event()
    try:
        wait_for_signal(stop)
    finally:
        daemon.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
