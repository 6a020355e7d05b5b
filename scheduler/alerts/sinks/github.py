"""GitHub issues: one issue per fingerprint, commented, closed on recovery, reopened on relapse.

The issue body carries ``<!-- schedctl:fingerprint=TIER/CLASS -->``; without a remembered issue
number (first alert, lost state, another host) the sink lists the repository's issues with the
configured labels (``state=all``, newest first; the list endpoint is consistent, unlike search)
and finds it by that marker, so restarts never open duplicates.

Idempotency: the body of a created issue and every comment carry
``<!-- schedctl:alert=OUTBOX_ID -->``. A retried delivery (attempt > 1, e.g. after a crash
between the send and the bookkeeping) looks for its own marker before writing again.

Writes (POST/PATCH/DELETE) are spaced at least ``write_interval_s`` (1 s) apart, as GitHub asks
of integrations; rate-limit answers become retryable errors in :mod:`.http`.

Plugin alias: github
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.alerts.payload import Alert
from scheduler.alerts.rules import Action, Severity
from scheduler.alerts.secrets import Secret
from scheduler.alerts.sinks.base import USER_AGENT, Delivery, Sink
from scheduler.alerts.sinks.github_text import (
    alert_marker,
    escalation_text,
    fingerprint_marker,
    issue_body,
    relapse_text,
    repeat_text,
    resolve_text,
)
from scheduler.alerts.sinks.http import HttpClient
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import AlertError

API_VERSION = "2022-11-28"
MAX_PAGES = 10


def failing_digest(alert: Alert) -> str:
    names = "\n".join(sorted(f.nodeid for f in alert.run.failing))
    return hashlib.sha256(f"{names}\n{alert.run.failing_total}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Issue:
    number: int
    state: str
    labels: frozenset[str]
    body: str

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Issue:
        labels = frozenset(
            str(label["name"]) if isinstance(label, Mapping) else str(label)
            for label in data.get("labels", ())
        )
        return cls(int(data["number"]), str(data["state"]), labels, str(data.get("body") or ""))


class GitHubSink(Sink):
    """Issue lifecycle through the REST API (``api_url`` for GitHub Enterprise).

    Plugin alias: github
    """

    keeps_reports = True

    kind = "github"

    def __init__(
        self,
        name: str,
        repo: str,
        http: HttpClient,
        *,
        token: Secret,
        api_url: str = "https://api.github.com",
        labels: Sequence[str] = ("test-failure", "automated"),
        escalation_labels: Sequence[str] = ("high-priority",),
        comment_min_interval_s: float = 21600.0,
        write_interval_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        tiers: Sequence[str] = (),
        severities: Sequence[str] = (),
    ) -> None:
        super().__init__(name, tiers=tiers, severities=severities)
        self._repo = repo
        self._http = http
        self._token = token
        self._api = api_url.rstrip("/")
        self._labels = list(labels)
        self._escalation = list(escalation_labels)
        self._comment_interval = timedelta(seconds=comment_min_interval_s)
        self._write_interval = write_interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._last_write: float | None = None

    @property
    def target(self) -> str:
        return f"github {self._repo}"

    def wants(self, alert: Alert) -> bool:
        """Repeats always reach the sink: it rate-limits comments with its own memory."""
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        issue = self._locate(alert.fingerprint, delivery.external)
        if alert.action == Action.RESOLVE.value:
            return self._resolve(alert, delivery, issue)
        if issue is None:
            return self._open(alert, delivery)
        if alert_marker(delivery.id) in issue.body:
            return self._remember(issue.number, alert, commented=True, previous=delivery.external)
        if issue.state == "closed":
            self._patch(issue.number, {"state": "open"})
            self._ensure_labels(issue, alert)
            self._comment(issue.number, alert, delivery, relapse_text(alert))
            return self._remember(issue.number, alert, commented=True)
        labelled = self._ensure_labels(issue, alert)
        if alert.action == Action.REPEAT.value and not self._comment_due(alert, delivery.external):
            return self._remember(issue.number, alert, commented=False, previous=delivery.external)
        if labelled:
            text = escalation_text(alert)
        elif alert.action == Action.FIRE.value:
            text = relapse_text(alert)
        else:
            text = repeat_text(alert)
        self._comment(issue.number, alert, delivery, text)
        return self._remember(issue.number, alert, commented=True)

    def _open(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any]:
        labels = list(self._labels)
        if alert.severity == Severity.CRITICAL.value:
            labels += [label for label in self._escalation if label not in labels]
        response = self._write(
            "POST",
            f"/repos/{self._repo}/issues",
            {"title": alert.title, "body": issue_body(alert, delivery.id), "labels": labels},
        )
        number = int(response["number"])
        return self._remember(number, alert, commented=True)

    def _resolve(
        self, alert: Alert, delivery: Delivery, issue: Issue | None
    ) -> Mapping[str, Any] | None:
        if issue is None:
            return None
        if issue.state == "open":
            self._comment(issue.number, alert, delivery, resolve_text(alert))
            for label in self._escalation:
                if label in issue.labels:
                    self._write(
                        "DELETE",
                        f"/repos/{self._repo}/issues/{issue.number}/labels/{label}",
                        None,
                        ok_statuses=(404,),
                    )
            self._patch(issue.number, {"state": "closed", "state_reason": "completed"})
        return {"issue": issue.number}

    def _ensure_labels(self, issue: Issue, alert: Alert) -> bool:
        """Add the escalation labels to a critical alert's issue; True when any was missing."""
        if alert.severity != Severity.CRITICAL.value:
            return False
        missing = [label for label in self._escalation if label not in issue.labels]
        if missing:
            self._write(
                "POST", f"/repos/{self._repo}/issues/{issue.number}/labels", {"labels": missing}
            )
        return bool(missing) or alert.action == Action.ESCALATE.value

    def _comment_due(self, alert: Alert, external: Mapping[str, Any]) -> bool:
        if external.get("digest") != failing_digest(alert):
            return True
        last = external.get("commented_at")
        if not isinstance(last, str):
            return True
        try:
            when = datetime.fromisoformat(last)
        except ValueError:
            return True
        return self._clock() - when >= self._comment_interval

    def _remember(
        self,
        number: int,
        alert: Alert,
        *,
        commented: bool,
        previous: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        if not commented and previous is not None:
            return {**previous, "issue": number}
        return {
            "issue": number,
            "digest": failing_digest(alert),
            "commented_at": self._clock().isoformat(),
        }

    # -- REST ------------------------------------------------------------------------------------

    def _locate(self, fingerprint: str, external: Mapping[str, Any]) -> Issue | None:
        number = external.get("issue")
        if isinstance(number, int):
            response = self._http.request(
                "GET",
                f"{self._api}/repos/{self._repo}/issues/{number}",
                headers=self._headers(),
                ok_statuses=(404, 410),
            )
            if response.status_code == 200:
                return Issue.from_api(self._http.json_body(response))
        return self._search(fingerprint)

    def _search(self, fingerprint: str) -> Issue | None:
        """The issue carrying the fingerprint's marker: among issues with our labels first, then
        among all (someone may have removed a label, or the configured labels changed)."""
        marker = fingerprint_marker(fingerprint)
        found = self._search_pages(marker, self._labels) if self._labels else None
        return found or self._search_pages(marker, [])

    def _search_pages(self, marker: str, labels: Sequence[str]) -> Issue | None:
        params = {"state": "all", "per_page": "100", "sort": "created", "direction": "desc"}
        if labels:
            params["labels"] = ",".join(labels)
        url: str | None = f"{self._api}/repos/{self._repo}/issues"
        found: list[Issue] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._http.request("GET", url, headers=self._headers(), params=params)
            for item in self._http.json_body(response):
                if "pull_request" not in item and marker in str(item.get("body") or ""):
                    found.append(Issue.from_api(item))
            url = response.links.get("next", {}).get("url")
            params = {}
        if not found:
            return None
        return sorted(found, key=lambda i: (i.state != "open", -i.number))[0]

    def _comment(self, number: int, alert: Alert, delivery: Delivery, text: str) -> None:
        if delivery.attempt > 1 and self._already_commented(number, alert, delivery.id):
            return
        self._write(
            "POST",
            f"/repos/{self._repo}/issues/{number}/comments",
            {"body": f"{alert_marker(delivery.id)}\n{text}"},
        )

    def _already_commented(self, number: int, alert: Alert, alert_id: str) -> bool:
        response = self._http.request(
            "GET",
            f"{self._api}/repos/{self._repo}/issues/{number}/comments",
            headers=self._headers(),
            params={"since": alert.created_at, "per_page": "100"},
        )
        marker = alert_marker(alert_id)
        return any(marker in str(c.get("body") or "") for c in self._http.json_body(response))

    def _patch(self, number: int, fields: Mapping[str, Any]) -> None:
        self._write("PATCH", f"/repos/{self._repo}/issues/{number}", dict(fields))

    def _write(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        ok_statuses: tuple[int, ...] = (),
    ) -> Any:
        if self._last_write is not None:
            wait = self._last_write + self._write_interval - self._monotonic()
            if wait > 0:
                self._sleep(wait)
        try:
            response = self._http.request(
                method,
                f"{self._api}{path}",
                headers=self._headers(),
                json=body,
                ok_statuses=ok_statuses,
            )
        finally:
            self._last_write = self._monotonic()
        return self._http.json_body(response) if response.content else None

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token.reveal()}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }

    def send_test(self, alert: Alert) -> str:
        """Checks the token can write issues in the repo; opens nothing."""
        response = self._http.request(
            "GET", f"{self._api}/repos/{self._repo}", headers=self._headers()
        )
        permissions = self._http.json_body(response).get("permissions") or {}
        if permissions and not (permissions.get("triage") or permissions.get("push")):
            raise AlertError(
                f"{self.target}: the token can read the repository but not manage issues",
                permanent=True,
            )
        if not self._http.json_body(response).get("has_issues", True):
            raise AlertError(
                f"{self.target}: issues are disabled in the repository", permanent=True
            )
        return f"{self.target}: token can manage issues (no issue was opened)"
