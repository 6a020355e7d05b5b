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
from datetime import datetime, timedelta, timezone
from typing import Any

from scheduler.alerts.payload import Alert
from scheduler.alerts.rules import Action, Severity
from scheduler.alerts.secrets import Secret
from scheduler.alerts.sinks.base import USER_AGENT, Delivery, Sink
from scheduler.alerts.sinks.http import HttpClient
from scheduler.errors import AlertError

API_VERSION = "2022-11-28"
MAX_PAGES = 10
MAX_TESTS_SHOWN = 25
MAX_CHANGES_SHOWN = 20


def fingerprint_marker(fingerprint: str) -> str:
    return f"<!-- schedctl:fingerprint={fingerprint} -->"


def alert_marker(alert_id: str) -> str:
    return f"<!-- schedctl:alert={alert_id} -->"


def failing_digest(alert: Alert) -> str:
    names = "\n".join(sorted(f.nodeid for f in alert.run.failing))
    return hashlib.sha256(f"{names}\n{alert.run.failing_total}".encode()).hexdigest()[:16]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
        clock: Callable[[], datetime] = _utcnow,
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
            self._comment(issue.number, alert, delivery, _relapse_text(alert))
            return self._remember(issue.number, alert, commented=True)
        labelled = self._ensure_labels(issue, alert)
        if alert.action == Action.REPEAT.value and not self._comment_due(alert, delivery.external):
            return self._remember(issue.number, alert, commented=False, previous=delivery.external)
        if labelled:
            text = _escalation_text(alert)
        elif alert.action == Action.FIRE.value:
            text = _relapse_text(alert)
        else:
            text = _repeat_text(alert)
        self._comment(issue.number, alert, delivery, text)
        return self._remember(issue.number, alert, commented=True)

    def _open(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any]:
        labels = list(self._labels)
        if alert.severity == Severity.CRITICAL.value:
            labels += [label for label in self._escalation if label not in labels]
        response = self._write(
            "POST",
            f"/repos/{self._repo}/issues",
            {"title": alert.title, "body": _issue_body(alert, delivery.id), "labels": labels},
        )
        number = int(response["number"])
        return self._remember(number, alert, commented=True)

    def _resolve(
        self, alert: Alert, delivery: Delivery, issue: Issue | None
    ) -> Mapping[str, Any] | None:
        if issue is None:
            return None
        if issue.state == "open":
            self._comment(issue.number, alert, delivery, _resolve_text(alert))
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
                return Issue.from_api(response.json())
        return self._search(fingerprint)

    def _search(self, fingerprint: str) -> Issue | None:
        marker = fingerprint_marker(fingerprint)
        params = {"state": "all", "per_page": "100", "sort": "created", "direction": "desc"}
        if self._labels:
            params["labels"] = ",".join(self._labels)
        url: str | None = f"{self._api}/repos/{self._repo}/issues"
        found: list[Issue] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._http.request("GET", url, headers=self._headers(), params=params)
            for item in response.json():
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
        return any(marker in str(c.get("body") or "") for c in response.json())

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
        return response.json() if response.content else None

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
        permissions = response.json().get("permissions") or {}
        if permissions and not (permissions.get("triage") or permissions.get("push")):
            raise AlertError(
                f"{self.target}: the token can read the repository but not manage issues",
                permanent=True,
            )
        if not response.json().get("has_issues", True):
            raise AlertError(
                f"{self.target}: issues are disabled in the repository", permanent=True
            )
        return f"{self.target}: token can manage issues (no issue was opened)"


# -- text ------------------------------------------------------------------------------------------


def _facts_table(alert: Alert) -> list[str]:
    run = alert.run
    rows = [
        ("Tier", f"`{alert.tier}`"),
        ("Failure", f"{alert.headline} (`{alert.failure_class}`)"),
        ("Run", f"{run.run_id} ({run.outcome}) — `{alert.show_command}`"),
        ("Severity", alert.severity),
    ]
    if alert.url:
        rows.append(("Link", alert.url))
    if run.sha:
        rows.append(("Commit", f"`{run.sha}` {run.subject}".rstrip()))
    if run.reason:
        rows.append(("Reason", run.reason.replace("\n", " ")[:300]))
    if run.host:
        rows.append(("Host", f"`{run.host}`"))
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _failing_section(alert: Alert) -> list[str]:
    run = alert.run
    if not run.failing:
        return []
    lines = ["", f"### Failing tests ({run.failing_total})", ""]
    for test in run.failing[:MAX_TESTS_SHOWN]:
        suffix = f" — {test.first_line}" if test.first_line else ""
        lines.append(f"- `{test.nodeid}`{suffix}")
    if run.failing_total > MAX_TESTS_SHOWN:
        lines.append(f"- … and {run.failing_total - MAX_TESTS_SHOWN} more")
    return lines


def _changes_section(alert: Alert) -> list[str]:
    run = alert.run
    if not run.changes_since_green:
        return []
    head = f"### Changes since the last green run ({run.last_green_run_id})"
    body = list(run.changes_since_green[:MAX_CHANGES_SHOWN])
    return ["", head, "", "```", *body, "```"]


def _issue_body(alert: Alert, alert_id: str) -> str:
    lines = [
        fingerprint_marker(alert.fingerprint),
        alert_marker(alert_id),
        f"**{alert.summary()}**",
        "",
        *_facts_table(alert),
        *_failing_section(alert),
        *_changes_section(alert),
        "",
        "_Managed by schedctl: one issue per tier and failure class. It is commented when the "
        "failing set changes, closed when the tier recovers and reopened if it fails again._",
    ]
    return "\n".join(lines)


def _repeat_text(alert: Alert) -> str:
    what = "The set of failing tests changed" if alert.failing_changed else "Still failing"
    return "\n".join(
        [f"**{what}** — {alert.summary()}", "", *_facts_table(alert), *_failing_section(alert)]
    )


def _escalation_text(alert: Alert) -> str:
    return "\n".join(
        [
            f"**Escalated to {alert.severity}: {alert.consecutive} failing runs in a row.**",
            "",
            *_facts_table(alert),
            *_failing_section(alert),
            *_changes_section(alert),
        ]
    )


def _relapse_text(alert: Alert) -> str:
    return "\n".join(
        [
            f"**Failing again** — {alert.summary()}",
            "",
            *_facts_table(alert),
            *_failing_section(alert),
            *_changes_section(alert),
        ]
    )


def _resolve_text(alert: Alert) -> str:
    run = alert.run
    commit = f" at `{run.sha}`" if run.sha else ""
    return (
        f"**Recovered**: run {run.run_id} of the `{alert.tier}` tier passed{commit}. "
        "Closing; schedctl reopens this issue if it fails again."
    )
