"""Several daemons on one store: each stamps a heartbeat; a survivor records a dead one's runs.

Every daemon on a shared (PostgreSQL) store writes ``heartbeat:<host>:<process identity>`` into
the store's meta rows every ``store.heartbeat`` seconds. Its runs carry the same host and process
identity, so another daemon can tell which heartbeat vouches for a run. A run whose owner's
heartbeat is older than ``store.host_timeout`` belongs to a daemon that died (kill -9, power,
network): a survivor finishes it ``interrupted`` through the ledger. The ledger's write is
guarded on the row still being active, so when two survivors see the same dead run (or the owner
comes back in time to finish it) the outcome is written and published once.

Runs with no heartbeat behind them (a foreground ``schedctl run``) are left to their own host's
crash recovery, which checks the process itself. Clocks of the hosts are assumed to agree to
well within ``host_timeout`` (NTP).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Stop, decide
from scheduler.run.ledger import RunLedger
from scheduler.store.engine import RunRecord, Store

log = structlog.get_logger("schedctl.hosts")

PREFIX = "heartbeat:"


def heartbeat_key(host: str | None, identity: str | None, pid: int | None) -> str:
    """The meta key a daemon stamps, and that vouches for the runs it owns."""
    return f"{PREFIX}{host or '?'}:{identity or f'pid-{pid}'}"


def owner_key(record: RunRecord) -> str:
    return heartbeat_key(record.host, record.owner_identity, record.owner_pid)


class HostWatch:
    """The daemon service that beats for this daemon and sweeps for dead ones."""

    name = "host-watch"

    def __init__(
        self,
        store: Store,
        ledger: RunLedger,
        *,
        host: str,
        identity: str | None,
        pid: int,
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.host = host
        self.key = heartbeat_key(host, identity, pid)
        self.interval_s = interval_s
        self.timeout = timedelta(seconds=timeout_s)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Service -------------------------------------------------------------------------------

    def start(self, _daemon: object) -> None:
        self.beat()  # before the first fire: our runs are vouched for from the start
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="host-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.store.delete_meta(self.key)  # a clean stop: nothing of ours is left to vouch for
        except Exception as exc:  # the store may be gone at shutdown; the stamp then ages out
            log.warning("heartbeat_not_removed", error=str(exc))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
                self.sweep()
            except Exception as exc:
                log.error("host_watch_failed", error=str(exc))

    # -- the two steps -------------------------------------------------------------------------

    def beat(self) -> None:
        self.store.set_meta(self.key, self.clock().isoformat())

    def sweep(self) -> list[int]:
        """Finish the active runs of daemons whose heartbeat is older than the timeout;
        returns the ids this daemon recorded ``interrupted``."""
        now = self.clock()
        beats = self.store.meta_with_prefix(PREFIX)
        stale: dict[str, float] = {}
        for key, stamp in beats.items():
            if key == self.key:
                continue
            try:
                age = (now - datetime.fromisoformat(stamp)).total_seconds()
            except (ValueError, TypeError):
                age = float("inf")  # unreadable: treat as dead, it will be rewritten if not
            if age > self.timeout.total_seconds():
                stale[key] = age
        if not stale:
            return []
        recorded: list[int] = []
        vouched: set[str] = set()
        for record in self.store.active_runs():
            key = owner_key(record)
            if key not in stale:
                vouched.add(key)
                continue
            reason = (
                f"host {record.host} stopped sending heartbeats (last {stale[key]:.0f}s ago, "
                f"timeout {self.timeout.total_seconds():.0f}s): its daemon died while the run "
                f"was {record.outcome.value}; recorded by host {self.host}"
            )
            final = self.ledger.finish(record.id, decide(Stop.INTERRUPTED, reason))
            if final.reason.endswith(f"recorded by host {self.host}"):
                recorded.append(record.id)
        for key in stale:
            if key not in vouched:
                self.store.delete_meta(key)
        if recorded:
            log.warning("dead_host_runs_interrupted", run_ids=recorded, by=self.host)
        return recorded
