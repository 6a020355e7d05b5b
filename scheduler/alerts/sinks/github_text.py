"""Markdown for the GitHub sink: the issue body (with its hidden markers) and the comments."""

from __future__ import annotations

from scheduler.alerts.payload import Alert

MAX_TESTS_SHOWN = 25
MAX_CHANGES_SHOWN = 20


def fingerprint_marker(fingerprint: str) -> str:
    return f"<!-- schedctl:fingerprint={fingerprint} -->"


def alert_marker(alert_id: str) -> str:
    return f"<!-- schedctl:alert={alert_id} -->"


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
        owner = f" ({test.owner})" if test.owner else ""
        lines.append(f"- `{test.nodeid}`{owner}{suffix}")
    if run.failing_total > MAX_TESTS_SHOWN:
        lines.append(f"- … and {run.failing_total - MAX_TESTS_SHOWN} more")
    if alert.owners and alert.firing:
        lines += ["", "Owners: " + " ".join(alert.owners)]
    return lines


def _changes_section(alert: Alert) -> list[str]:
    run = alert.run
    if not run.changes_since_green:
        return []
    head = f"### Changes since the last green run ({run.last_green_run_id})"
    body = list(run.changes_since_green[:MAX_CHANGES_SHOWN])
    return ["", head, "", "```", *body, "```"]


def _report_section(alert: Alert) -> list[str]:
    return ["", "---", "", alert.report] if alert.report else []


def issue_body(alert: Alert, alert_id: str) -> str:
    if alert.report:
        return "\n".join(
            [
                fingerprint_marker(alert.fingerprint),
                alert_marker(alert_id),
                f"**{alert.tier}: {alert.failure_class}** (run {alert.run.run_id})",
                *_report_section(alert),
                "",
                "_Managed by schedctl: one issue for this review; each new review is a comment._",
            ]
        )
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


def repeat_text(alert: Alert) -> str:
    if alert.report:
        return "\n".join(
            [f"**New {alert.failure_class}** (run {alert.run.run_id})", *_report_section(alert)]
        )
    what = "The set of failing tests changed" if alert.failing_changed else "Still failing"
    return "\n".join(
        [f"**{what}** — {alert.summary()}", "", *_facts_table(alert), *_failing_section(alert)]
    )


def escalation_text(alert: Alert) -> str:
    return "\n".join(
        [
            f"**Escalated to {alert.severity}: {alert.consecutive} failing runs in a row.**",
            "",
            *_facts_table(alert),
            *_failing_section(alert),
            *_changes_section(alert),
        ]
    )


def relapse_text(alert: Alert) -> str:
    return "\n".join(
        [
            f"**Failing again** — {alert.summary()}",
            "",
            *_facts_table(alert),
            *_failing_section(alert),
            *_changes_section(alert),
        ]
    )


def resolve_text(alert: Alert) -> str:
    run = alert.run
    commit = f" at `{run.sha}`" if run.sha else ""
    return (
        f"**Recovered**: run {run.run_id} of the `{alert.tier}` tier passed{commit}. "
        "Closing; schedctl reopens this issue if it fails again."
    )
