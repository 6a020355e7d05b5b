"""``schedctl schedule``: the next fire times of each tier.

It reads the config's :class:`~scheduler.config_view.ConfigView` (no pydantic) and computes the
fire times with :class:`~scheduler.daemon.crontab.CrontabSchedule` (APScheduler's answers,
without importing APScheduler).
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import click

from scheduler.cli.app import AppContext
from scheduler.cli.output import emit_json
from scheduler.config_view import TierTable
from scheduler.daemon.crontab import CrontabSchedule


def upcoming(config: TierTable, now: datetime, count: int) -> list[dict[str, object]]:
    """Per tier ``{tier, schedule, next}``: its next ``count`` fire times after ``now`` (ISO
    8601, UTC); none for a tier without a schedule or disabled."""
    out: list[dict[str, object]] = []
    tz = ZoneInfo(config.timezone)
    for name, tier in config.tiers.items():
        if tier.schedule is None or not tier.enabled:
            out.append({"tier": name, "schedule": tier.schedule, "next": []})
            continue
        times = CrontabSchedule(tier.schedule, tz).next_fire_times(now, count)
        out.append(
            {
                "tier": name,
                "schedule": tier.schedule,
                "next": [
                    t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") for t in times
                ],
            }
        )
    return out


@click.command("schedule")
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def schedule_command(app: AppContext, count: int, as_json: bool) -> None:
    """Next fire times per tier, in UTC (ISO 8601)."""
    rows = upcoming(app.read_view, datetime.now(timezone.utc), count)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    from scheduler.cli.output import console, line

    table = Table("tier", "schedule", f"next {count} (UTC)")
    for row in rows:
        nexts = row["next"]
        assert isinstance(nexts, list)
        table.add_row(
            line(row["tier"]), line(row["schedule"] or "manual"), line("\n".join(nexts) or "-")
        )
    console().print(table)


__all__ = ["schedule_command", "upcoming"]
