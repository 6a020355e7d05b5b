"""``schedctl tests``, ``schedctl test NODEID`` and ``schedctl quarantine``: test history."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from scheduler.cli.app import AppContext
from scheduler.cli.output import console, emit_json, fmt_time, line
from scheduler.config import parse_duration
from scheduler.history.owners import Owners
from scheduler.history.quarantine import new_quarantine
from scheduler.history.stats import SORT_KEYS, History, TestStats
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import UsageError
from scheduler.kernel.heap import frozen_heap

STRIP = {"passed": "✓", "failed": "✗", "error": "E", "flaky": "F", "skipped": "s"}


def _since(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None


def _history(app: AppContext) -> History:
    return History(app.store, Owners.load(app.config.project.path, app.config.owners))


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024  # type: ignore[assignment]
    return "-"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


@click.command("tests")
@click.option("--tier", help="Only results of this tier.")
@click.option("--since", "since", default="30d", show_default=True, help="Window, in whole days.")
@click.option("--sort", type=click.Choice(SORT_KEYS), default="fail-rate", show_default=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--flaky", "flaky_only", is_flag=True, help="Only flaky tests, with evidence.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tests_command(
    app: AppContext, tier: str | None, since: str, sort: str, limit: int, flaky_only: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Per-test history: runs, pass rate, flakiness, durations, peak memory, owner."""
    if tier:
        app.config.tier(tier)
    history = _history(app)
    # The store's libraries are loaded: a full collection during the query would walk them all.
    with frozen_heap(collect=False):
        found = history.tests(
            utcnow(), since_s=_since(since), tier=tier, sort=sort, limit=limit,
            flaky_only=flaky_only,
        )  # fmt: skip
    if as_json:
        emit_json([t.to_json() for t in found])
        return
    table = Table("test", "runs", "pass", "fail", "flaky", "p50", "p90", "peak mem", "last seen",
                  "owner")  # fmt: skip
    for t in found:
        table.add_row(*_row(t))
    out = console()
    out.print(table)
    if flaky_only:
        for t in found:
            if t.verdict is None:
                continue
            out.print(line((t.nodeid, "bold")))
            for e in t.verdict.evidence[:5]:
                runs = ", ".join(str(r) for r in e.run_ids[:8])
                out.print(line("  ", e.kind, " at ", (e.sha or "?")[:10], ": runs ", runs))


def _row(t: TestStats) -> list[Text]:
    s = t.summary
    rate = t.pass_rate
    flaky = f"{t.flaky_score:.0%}" if t.verdict is not None and t.verdict.flaky else "-"
    return [
        line(t.nodeid),
        line(s.runs),
        line("-" if rate is None else f"{rate:.0%}"),
        line(s.failed),
        line(flaky),
        line(_secs(t.p50_s)),
        line(_secs(t.p90_s)),
        line(fmt_bytes(s.peak_rss_max)),
        line(fmt_time(s.last_at)),
        line(t.owner or "-"),
    ]


@click.command("test")
@click.argument("nodeid")
@click.option("--tier", help="Only results of this tier.")
@click.option("--since", "since", default="30d", show_default=True)
@click.option("--last", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def test_command(
    app: AppContext, nodeid: str, tier: str | None, since: str, last: int, as_json: bool
) -> None:
    """One test's history: outcome strip of its last runs with commits, duration and memory."""
    if tier:
        app.config.tier(tier)
    history = _history(app)
    with frozen_heap(collect=False):
        found = history.test(nodeid, utcnow(), since_s=_since(since), tier=tier, last=last)
    if found is None:
        raise UsageError(f"no results for test {nodeid!r} in {app.store.location}")
    hosts = app.store.run_hosts([a["run_id"] for a in found["attempts"]])
    for a in found["attempts"]:
        a["host"] = hosts.get(a["run_id"])
    if as_json:
        emit_json(found)
        return
    out = console()
    attempts = found["attempts"]
    strip = "".join(STRIP.get(a["outcome"], "?") for a in attempts if a["final"])
    out.print(line((nodeid, "bold"), "  owner ", found["owner"]))
    stats = found["stats"]
    if stats:
        out.print(line(
            f"  {stats['runs']} runs, {stats['failed']} failed, {stats['flaky_runs']} flaky",
            f", flaky: {'yes' if stats['flaky'] else 'no'} (score {stats['flaky_score']:.0%})",
        ))  # fmt: skip
        for e in stats["evidence"][:5]:
            out.print(line("  evidence: ", e["kind"], " at ", (e["sha"] or "?")[:10], " runs ",
                           ", ".join(map(str, e["run_ids"][:8]))))  # fmt: skip
    out.print(line("  last runs (oldest first): ", strip))
    table = Table("run", "tier", "sha", "attempt", "outcome", "duration", "peak mem", "host")
    for a in attempts:
        table.add_row(
            line(a["run_id"]), line(a["tier"]), line((a["sha"] or "-")[:10]), line(a["attempt"]),
            line(a["outcome"]), line(_secs(a["duration_s"])), line(fmt_bytes(a["peak_rss_bytes"])),
            line(a["host"] or "-"),
        )  # fmt: skip
    out.print(table)


@click.group("quarantine")
def quarantine_group() -> None:
    """Quarantined tests still run and are recorded; their failures do not fail the tier."""


@quarantine_group.command("add")
@click.argument("nodeid")
@click.option("--reason", required=True, help="Why (shown in show, alerts and list).")
@click.option("--owner", help="Who is alerted when it expires.")
@click.option("--expires", help="Lifetime, e.g. 14d; the owner is alerted once when it ends.")
@click.pass_obj
def quarantine_add(
    app: AppContext, nodeid: str, reason: str, owner: str | None, expires: str | None
) -> None:
    """Quarantine NODEID."""
    row = new_quarantine(nodeid, reason, owner, expires, utcnow())
    app.store.quarantine_add(row)
    until = f" until {fmt_time(row.expires_at)}" if row.expires_at else ""
    console().print(line("quarantined ", (row.nodeid, "bold"), until))


@quarantine_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def quarantine_list(app: AppContext, as_json: bool) -> None:
    """List quarantined tests."""
    rows = app.store.quarantine_list()
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    table = Table("test", "owner", "expires", "reason")
    now = utcnow()
    for r in rows:
        expired = r.expires_at is not None and r.expires_at <= now
        expires = fmt_time(r.expires_at) + (" (expired)" if expired else "")
        table.add_row(line(r.nodeid), line(r.owner), line(expires), line(r.reason))
    console().print(table)


@quarantine_group.command("remove")
@click.argument("nodeid")
@click.pass_obj
def quarantine_remove(app: AppContext, nodeid: str) -> None:
    """End the quarantine of NODEID."""
    if not app.store.quarantine_remove(nodeid):
        raise UsageError(f"{nodeid!r} is not quarantined")
    console().print(line("removed ", (nodeid, "bold")))
