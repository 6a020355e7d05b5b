"""The sink contract: one class per channel, all built from config, all delivering an ``Alert``.

A sink never touches the store: the worker hands it the outbox row's id and attempt number (its
idempotency key) and what the sink stored for that fingerprint last time (``external``, e.g. a
GitHub issue number); the sink returns the new ``external`` to keep, or ``None``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scheduler.alerts.payload import Alert
from scheduler.alerts.rules import Action

USER_AGENT = "schedctl-alerts"
ALERT_ID_HEADER = "X-Schedctl-Alert-Id"


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one outbox row.

    :ivar id: the outbox row id, stable across retries and restarts (the idempotency key).
    :ivar attempt: 1 for the first try; a later attempt may follow a crash after a send.
    :ivar external: what this sink returned for the same fingerprint last time.
    """

    id: str
    attempt: int = 1
    external: Mapping[str, Any] = field(default_factory=dict)


class Sink(abc.ABC):
    """A channel alerts go to, with its own tier and severity filters.

    Subclasses implement :meth:`deliver` and raise :class:`~scheduler.kernel.errors.AlertError`
    (through
    :class:`scheduler.alerts.sinks.http.HttpClient`) on failure.
    """

    kind: ClassVar[str]
    min_interval_s: ClassVar[float] = 0.0
    keeps_reports: ClassVar[bool] = False
    """Whether it shows an alert's Markdown ``report`` whole (issue trackers): only such sinks
    get the marker review's reports."""

    def __init__(
        self, name: str, *, tiers: Sequence[str] = (), severities: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.tiers = frozenset(tiers)
        self.severities = frozenset(severities)

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """Where it sends, safe to print and log (never a secret URL)."""

    def accepts(self, alert: Alert) -> bool:
        """Whether this sink wants the alert at all (filters, then the channel's own taste)."""
        if self.tiers and alert.tier not in self.tiers:
            return False
        if self.severities and alert.severity not in self.severities:
            return False
        return self.wants(alert)

    def wants(self, alert: Alert) -> bool:
        """Chat-like sinks hear a repeat only when the set of failing tests changed."""
        return alert.action != Action.REPEAT.value or alert.failing_changed

    @abc.abstractmethod
    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        """Send the alert; return the ``external`` state to remember for its fingerprint."""

    def send_test(self, alert: Alert) -> str:
        """``schedctl alerts test``: send a harmless message; returns what was done."""
        self.deliver(alert, Delivery(id=f"test-{alert.created_at}"))
        return f"sent a test message to {self.target}"

    def close(self) -> None:
        """Release resources (the injected session stays open; it belongs to the caller)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, target={self.target!r})"
