"""Slack incoming webhook: a short block message a person can read on a phone.

The webhook URL is the credential, so it comes from env/file only and is never printed: the
sink's target is just "slack webhook". Slack has no idempotency key; a crash between the send
and the bookkeeping can post a message twice (at-least-once).

Plugin alias: slack
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.alerts.payload import Alert
from scheduler.alerts.rules import Action
from scheduler.alerts.secrets import Secret
from scheduler.alerts.sinks.base import USER_AGENT, Delivery, Sink
from scheduler.alerts.sinks.http import HttpClient

MAX_TESTS_SHOWN = 10
MAX_CHANGES_SHOWN = 10

_ICONS = {
    Action.FIRE.value: ":red_circle:",
    Action.REPEAT.value: ":red_circle:",
    Action.ESCALATE.value: ":rotating_light:",
    Action.RESOLVE.value: ":large_green_circle:",
    Action.TEST.value: ":wave:",
}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: Alert) -> dict[str, Any]:
    """Block Kit message with a plain-text fallback (``text``) for notifications."""
    run = alert.run
    icon = _ICONS.get(alert.action, ":grey_question:")
    fields = [
        f"*Tier*\n{_escape(alert.tier)}",
        f"*Outcome*\n{_escape(run.outcome)}",
        f"*Severity*\n{alert.severity}",
        f"*Run*\n{run.run_id}",
    ]
    if run.sha:
        subject = f" {_escape(run.subject)}" if run.subject else ""
        fields.append(f"*Commit*\n`{run.sha[:12]}`{subject}")
    if alert.consecutive > 1 and alert.firing:
        fields.append(f"*Failing runs in a row*\n{alert.consecutive}")
    if alert.owners and alert.firing:
        fields.append("*Owners*\n" + _escape(" ".join(alert.owners)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{icon} {_escape(alert.summary())}"},
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if run.failing and alert.firing:
        lines = [
            f"• `{_escape(f.nodeid)}`" + (f"\n    {_escape(f.first_line)}" if f.first_line else "")
            for f in run.failing[:MAX_TESTS_SHOWN]
        ]
        more = run.failing_total - min(len(run.failing), MAX_TESTS_SHOWN)
        if more > 0:
            lines.append(f"… and {more} more")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Failing tests*\n" + "\n".join(lines)},
            }
        )
    if run.changes_since_green and alert.firing:
        shown = "\n".join(_escape(c) for c in run.changes_since_green[:MAX_CHANGES_SHOWN])
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Changes since last green*\n```{shown}```"},
            }
        )
    context = f"`{alert.show_command}`"
    if alert.url:
        context += f" · <{alert.url}|open run>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": alert.summary(), "blocks": blocks}


class SlackSink(Sink):
    """Posts :func:`slack_message` to an incoming-webhook URL.

    Plugin alias: slack
    """

    kind = "slack"

    def __init__(
        self,
        name: str,
        url: Secret,
        http: HttpClient,
        *,
        tiers: Sequence[str] = (),
        severities: Sequence[str] = (),
    ) -> None:
        super().__init__(name, tiers=tiers, severities=severities)
        self._url = url
        self._http = http

    @property
    def target(self) -> str:
        return "slack webhook"

    def deliver(self, alert: Alert, delivery: Delivery) -> Mapping[str, Any] | None:
        self._http.request(
            "POST",
            self._url.reveal(),
            headers={"User-Agent": USER_AGENT},
            json=slack_message(alert),
        )
        return None
