"""The delivery worker: a daemon service that drains the outbox into the sinks.

One thread (lane) per sink, so GitHub's write spacing or a rate-limited Slack never delays the
webhook. Each due row is claimed (guarded in SQL, see :mod:`outbox`), handed to its sink and then
marked sent, rescheduled (exponential backoff with jitter, or the server's ``Retry-After``) or
marked dead (permanent 4xx, or attempts exhausted). A sink that answered "rate limited" is left
alone until its delay passes, for every row, not just the one that hit the limit.
Nothing here raises into the daemon: failures are logged (without secrets) and retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from scheduler.alerts.outbox import DEFAULT_LEASE_S, Claim, Outbox, OutboxRow
from scheduler.alerts.payload import Alert
from scheduler.alerts.retry import Backoff
from scheduler.alerts.sinks.base import Delivery, Sink
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import AlertError
from scheduler.store.engine import Store

log = structlog.get_logger("schedctl.alerts")

ResultHook = Callable[[str, str], None]
"""Called with ``(sink, outcome)`` after every attempt; outcome is sent, retry or dead."""


@dataclass(frozen=True)
class WorkerSettings:
    poll_s: float = 5.0
    batch: int = 50
    lease_s: float = DEFAULT_LEASE_S
    stop_timeout_s: float = 15.0
    backoff: Backoff = field(default_factory=Backoff)


class DeliveryWorker:
    """Daemon service ``alerts``: ``start(daemon)``/``stop()``; ``run_once()`` for tests."""

    name = "alerts"

    def __init__(
        self,
        store: Store,
        sinks: Iterable[Sink],
        *,
        settings: WorkerSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_result: ResultHook | None = None,
    ) -> None:
        self.settings = settings or WorkerSettings()
        self.sinks = {sink.name: sink for sink in sinks}
        self.clock = clock
        self.outbox = Outbox(store, clock=clock, lease_s=self.settings.lease_s)
        self.on_result = on_result
        self._blocked_until: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wakes = {name: threading.Event() for name in self.sinks}
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"DeliveryWorker(sinks={sorted(self.sinks)})"

    # -- service ---------------------------------------------------------------------------------

    def start(self, daemon: object | None = None) -> None:
        if self._threads:
            return
        self._stop.clear()
        for name in self.sinks:
            thread = threading.Thread(
                target=self._lane, args=(name,), name=f"schedctl-alerts-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("alert_worker_started", sinks=sorted(self.sinks))

    def stop(self) -> None:
        """Finish the deliveries in flight (bounded by the HTTP timeout), then return."""
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(self.settings.stop_timeout_s)
            if thread.is_alive():
                log.warning(
                    "alert_worker_stop_timeout",
                    lane=thread.name,
                    timeout_s=self.settings.stop_timeout_s,
                )
        self._threads = []
        for sink in self.sinks.values():
            sink.close()

    def wake(self) -> None:
        """Look at the outbox now (the recorder calls this after writing rows)."""
        for event in self._wakes.values():
            event.set()

    def _lane(self, sink: str) -> None:
        wake = self._wakes[sink]
        while not self._stop.is_set():
            try:
                attempted = self.run_once(sink)
            except Exception:
                # e.g. the store is locked for longer than busy_timeout; try again later.
                log.exception("alert_worker_iteration_failed", sink=sink)
                attempted = 0
            if attempted:
                continue
            wake.wait(self._idle_wait(sink))
            wake.clear()

    def _idle_wait(self, sink: str) -> float:
        now = self.clock()
        candidates = [self.settings.poll_s]
        due = self.outbox.next_due_at(sink)
        if due is not None and due > now:
            candidates.append((due - now).total_seconds())
        with self._lock:
            blocked = self._blocked_until.get(sink)
        if blocked is not None and blocked > now:
            candidates.append((blocked - now).total_seconds())
        return max(min(candidates), 0.01)

    # -- delivery --------------------------------------------------------------------------------

    def run_once(self, sink: str | None = None) -> int:
        """Attempt every row (of ``sink``, else of all) due now; returns how many were tried."""
        attempted = 0
        for row in self.outbox.due(self.settings.batch, sink):
            if self._stop.is_set() and self._threads:
                break
            if self._blocked(row.sink):
                continue
            claim = self.outbox.claim(row)
            if claim is None:
                continue
            attempted += 1
            self._attempt(claim)
        return attempted

    def _blocked(self, sink: str) -> bool:
        with self._lock:
            until = self._blocked_until.get(sink)
            if until is None:
                return False
            if until <= self.clock():
                del self._blocked_until[sink]
                return False
            return True

    def _attempt(self, claim: Claim) -> None:
        row = claim.row
        sink = self.sinks.get(row.sink)
        if sink is None:
            self._dead(claim, f"sink {row.sink!r} is no longer configured")
            return
        try:
            alert = Alert.from_json(row.payload)
        except (KeyError, TypeError, ValueError) as exc:
            self._dead(claim, f"unreadable payload: {type(exc).__name__}: {exc}")
            return
        delivery = Delivery(
            id=row.id,
            attempt=claim.attempt,
            external=self.outbox.external(row.fingerprint, row.sink),
        )
        try:
            external = sink.deliver(alert, delivery)
        except AlertError as exc:
            self._failed(claim, exc)
            return
        except Exception as exc:
            # A bug in a sink: keep the row, retry with backoff, say what broke.
            self._failed(claim, AlertError(f"{sink.target}: {type(exc).__name__}: {exc}"))
            return
        if self.outbox.complete(claim, external):
            log.info(
                "alert_sent",
                id=row.id,
                sink=row.sink,
                fingerprint=row.fingerprint,
                action=row.action,
                attempt=claim.attempt,
            )
            self._report(row.sink, "sent")
        else:
            log.warning("alert_lease_lost", id=row.id, sink=row.sink, attempt=claim.attempt)

    def _failed(self, claim: Claim, exc: AlertError) -> None:
        row = claim.row
        backoff = self.settings.backoff
        if exc.permanent:
            self._dead(claim, str(exc))
            return
        if backoff.exhausted(claim.attempt):
            self._dead(claim, f"gave up after {claim.attempt} attempts: {exc}")
            return
        delay = backoff.delay(claim.attempt, exc.retry_after_s)
        if exc.retry_after_s is not None:
            with self._lock:
                self._blocked_until[row.sink] = self.clock() + timedelta(seconds=delay)
        self.outbox.retry(claim, delay, str(exc))
        log.warning(
            "alert_delivery_retry",
            id=row.id,
            sink=row.sink,
            attempt=claim.attempt,
            delay_s=round(delay, 3),
            error=str(exc),
        )
        self._report(row.sink, "retry")

    def _dead(self, claim: Claim, error: str) -> None:
        self.outbox.kill(claim, error)
        log.error(
            "alert_delivery_dead",
            id=claim.row.id,
            sink=claim.row.sink,
            attempt=claim.attempt,
            error=error,
        )
        self._report(claim.row.sink, "dead")

    def _report(self, sink: str, outcome: str) -> None:
        if self.on_result is not None:
            try:
                self.on_result(sink, outcome)
            except Exception:
                log.exception("alert_result_hook_failed", sink=sink)

    def pending(self) -> list[OutboxRow]:
        return self.outbox.rows(states=["pending", "sending"])
