"""The review kind: the quarterly marker review (``schedctl markers review``) on a cron.

The tier's own runner and image collect the suite at the run's commit (collect-only, as its
pytest runs would); the store's history feeds the audit; the Markdown report is written to the
run dir as ``review.md`` and its counts to the run's details. The run passes when the review was
made (findings are not failures); a collection error makes it ``error``. Delivering the report
(one GitHub issue, updated every quarter) is the alert listener's job:
:mod:`scheduler.alerts.review`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runners.base import LOG_FILE, RunResult
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import RunEnding, Termination
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence

REPORT_FILE = "review.md"


@dataclass(frozen=True)
class ReviewMade:
    """The review was made (its findings are for people, not a failure): a passing verdict."""

    passed: bool = True
    reasons: Sequence[str] = ()


class ReviewKind:
    name = "review"

    def prepare(self, ctx: RunContext) -> Prepared:
        def execute(cancel: threading.Event) -> Finished:
            from scheduler.markers import review as reviewing
            from scheduler.markers.audit import audit
            from scheduler.markers.collect import CollectionFailed, collect_in
            from scheduler.store.engine import Store

            started = utcnow()
            details: dict[str, Any] = {}
            collect_dir = ctx.run_dir / "collect"
            collect_dir.mkdir(parents=True, exist_ok=True)
            try:
                found_items = collect_in(
                    ctx.config, ctx.tier_name, ctx.runner, ctx.workdir, collect_dir, cancel
                )
            except CollectionFailed as exc:
                (ctx.run_dir / LOG_FILE).write_text(f"[schedctl] {exc}\n", encoding="utf-8")
                return _finished(started, 2, str(exc), details)
            if cancel.is_set():
                return _finished(started, None, "cancelled", details, Termination.CANCELLED)
            config = reviewing.for_period(ctx.config, ctx.config.markers.review_since)
            now = utcnow()
            found = audit(config, Store(config.db_path), found_items, now)
            catalog = ctx.workdir / config.markers.catalog
            result = reviewing.review(config, found, config.markers.review_since, catalog)
            reviewing.save_snapshot(config, found)
            (ctx.run_dir / REPORT_FILE).write_text(result.markdown, encoding="utf-8")
            details["markers_review"] = {"report": REPORT_FILE, "findings": result.findings}
            summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.findings.items())
            (ctx.run_dir / LOG_FILE).write_text(
                f"[schedctl] marker review written: {summary}\n", encoding="utf-8"
            )
            return _finished(started, 0, f"marker review: {summary}", details)

        return Prepared({"runner": ctx.runner.alias, "argv": []}, execute)


def _finished(
    started: Any,
    exit_code: int | None,
    message: str,
    details: dict[str, Any],
    termination: Termination = Termination.EXITED,
) -> Finished:
    result = RunResult(termination, exit_code, started, utcnow(), message)
    made = ReviewMade() if exit_code == 0 else None
    ending = RunEnding(termination=termination, exit_code=exit_code, message=message, verdict=made)
    return Finished(ending, Evidence(result, details=details))
