"""Generic JSON webhook, optionally signed with HMAC-SHA256 over the exact body bytes.

Headers: ``X-Schedctl-Alert-Id`` (same value on every retry: receivers de-duplicate on it, which
closes the at-least-once window of a crash between send and bookkeeping), ``X-Schedctl-Event``
(the action) and, with a secret, ``X-Schedctl-Signature: sha256=<hex>``.

Plugin alias: webhook
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from scheduler.alerts.payload import Alert
from scheduler.alerts.secrets import Secret
from scheduler.alerts.sinks.base import ALERT_ID_HEADER, USER_AGENT, Delivery, Sink
from scheduler.alerts.sinks.http import HttpClient

SIGNATURE_HEADER = "X-Schedctl-Signature"
EVENT_HEADER = "X-Schedctl-Event"
SCHEMA = "schedctl.alert/v1"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(alert: Alert, alert_id: str) -> dict[str, Any]:
    """The JSON document receivers get; flat keys first, the full run facts under ``run``."""
    run = alert.run
    return {
        "schema": SCHEMA,
        "id": alert_id,
        "fingerprint": alert.fingerprint,
        "tier": alert.tier,
        "failure_class": alert.failure_class,
        "action": alert.action,
        "state": alert.state,
        "severity": alert.severity,
        "consecutive_failures": alert.consecutive,
        "relapse": alert.relapse,
        "summary": alert.summary(),
        "run_id": run.run_id,
        "outcome": run.outcome,
        "sha": run.sha,
        "ref": run.ref,
        "failing": [
            {"nodeid": f.nodeid, "outcome": f.outcome, "error": f.first_line, "owner": f.owner}
            for f in run.failing
        ],
        "owners": list(alert.owners),
        "failing_total": run.failing_total,
        "changes_since_green": list(run.changes_since_green),
        "show_command": alert.show_command,
        "url": alert.url,
        "created_at": alert.created_at,
        "run": alert.to_json()["run"],
    }


class WebhookSink(Sink):
    """POSTs :func:`webhook_body` as compact JSON.

    Plugin alias: webhook
    """

    kind = "webhook"

    def __init__(
        self,
        name: str,
        url: str | Secret,
        http: HttpClient,
        *,
        secret: Secret | None = None,
        tiers: Sequence[str] = (),
        severities: Sequence[str] = (),
    ) -> None:
        super().__init__(name, tiers=tiers, severities=severities)
        # A URL may carry a token (in its path or query): kept as a Secret like the others.
        self._url = url if isinstance(url, Secret) else Secret(url)
        self._http = http
        self._secret = secret

    @property
    def target(self) -> str:
        parts = urlsplit(self._url.reveal())
        return f"webhook {parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"

    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        body = json.dumps(
            webhook_body(alert, delivery.id), sort_keys=True, separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ALERT_ID_HEADER: delivery.id,
            EVENT_HEADER: alert.action,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret.reveal(), body)
        self._http.request("POST", self._url.reveal(), headers=headers, data=body)
        return None
