"""Prometheus Alertmanager, API v2: ``POST /api/v2/alerts``.

Alertmanager ends an alert by itself ``resolve_timeout`` after the last post unless ``endsAt`` is
given, which would "resolve" a failing weekly tier after five minutes. So firing alerts carry
``endsAt = now + firing_ttl`` (default 8 days, longer than the weekly cadence; each repeat
refreshes it) and a resolve posts ``endsAt = now``. Severity is a label, so escalation ends the
warning alert and starts the critical one; resolve ends both. Posting the same labels again is
idempotent (Alertmanager merges by label set), so retries and crash replays are harmless.

Plugin alias: alertmanager
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from scheduler.alerts.payload import Alert
from scheduler.alerts.rules import Action, Severity
from scheduler.alerts.sinks.base import USER_AGENT, Delivery, Sink
from scheduler.alerts.sinks.http import HttpClient
from scheduler.kernel.clock import utcnow

ALERTNAME = "SchedctlTierFailing"
TEST_ALERTNAME = "SchedctlTest"
DEFAULT_FIRING_TTL = timedelta(days=8)
TEST_TTL = timedelta(minutes=5)


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class AlertmanagerSink(Sink):
    """Posts one alert per (tier, failure class, severity).

    Plugin alias: alertmanager
    """

    kind = "alertmanager"

    def __init__(
        self,
        name: str,
        url: str,
        http: HttpClient,
        *,
        host: str | None = None,
        firing_ttl: timedelta = DEFAULT_FIRING_TTL,
        clock: Callable[[], datetime] = utcnow,
        tiers: Sequence[str] = (),
        severities: Sequence[str] = (),
    ) -> None:
        super().__init__(name, tiers=tiers, severities=severities)
        self._url = url.rstrip("/")
        self._http = http
        self._host = host or socket.gethostname()
        self._ttl = firing_ttl
        self._clock = clock

    @property
    def target(self) -> str:
        return f"alertmanager {self._url}"

    def wants(self, alert: Alert) -> bool:
        """Every repeat refreshes ``endsAt``, so Alertmanager hears all of them."""
        return True

    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        now = self._clock()
        entries = [
            self._entry(alert, severity, ends) for severity, ends in self._timeline(alert, now)
        ]
        self._http.request(
            "POST",
            f"{self._url}/api/v2/alerts",
            headers={"User-Agent": USER_AGENT},
            json=entries,
        )
        return None

    def _timeline(self, alert: Alert, now: datetime) -> list[tuple[str, datetime]]:
        if alert.action == Action.RESOLVE.value:
            return [(s.value, now) for s in Severity]
        if alert.action == Action.TEST.value:
            return [(alert.severity, now + TEST_TTL)]
        firing = [(alert.severity, now + self._ttl)]
        if alert.severity == Severity.CRITICAL.value:
            firing.insert(0, (Severity.WARNING.value, now))
        return firing

    def _entry(self, alert: Alert, severity: str, ends: datetime) -> dict[str, Any]:
        run = alert.run
        labels = {
            "alertname": TEST_ALERTNAME if alert.action == Action.TEST.value else ALERTNAME,
            "tier": alert.tier,
            "failure_class": alert.failure_class,
            "severity": severity,
            "host": run.host or self._host,
        }
        annotations = {
            "summary": alert.summary(),
            "description": _description(alert),
            "run_id": str(run.run_id),
            "outcome": run.outcome,
            "show_command": alert.show_command,
        }
        if run.sha:
            annotations["sha"] = run.sha
        entry: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "endsAt": _stamp(ends),
        }
        if alert.action != Action.RESOLVE.value:
            # On resolve Alertmanager keeps the start time it already knows.
            entry["startsAt"] = alert.created_at.replace("+00:00", "Z")
        if alert.url:
            entry["generatorURL"] = alert.url
        return entry


def _description(alert: Alert) -> str:
    run = alert.run
    lines = [alert.summary()]
    if run.reason:
        lines.append(run.reason)
    lines.extend(
        f"{f.nodeid}: {f.first_line}" if f.first_line else f.nodeid for f in run.failing[:10]
    )
    if run.failing_total > 10:
        lines.append(f"... and {run.failing_total - 10} more")
    lines.append(f"details: {alert.show_command}")
    return "\n".join(lines)
