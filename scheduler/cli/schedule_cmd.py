"""``schedctl schedule`` and ``schedctl config check|schema``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from scheduler.cli.app import AppContext, find_config
from scheduler.cli.output import console, emit_json
from scheduler.config import Config, json_schema, load_config
from scheduler.daemon.cron import next_fire_times, parse_cron
from scheduler.kernel.errors import ConfigError


def upcoming(config: Config, now: datetime, count: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    tz = ZoneInfo(config.timezone)
    for name, tier in config.tiers.items():
        if tier.schedule is None or not tier.enabled:
            out.append({"tier": name, "schedule": tier.schedule, "next": []})
            continue
        trigger = parse_cron(tier.schedule, tz)
        times = next_fire_times(trigger, now, count)
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
    rows = upcoming(app.config, datetime.now(timezone.utc), count)
    if as_json:
        emit_json(rows)
        return
    table = Table("tier", "schedule", f"next {count} (UTC)")
    for row in rows:
        nexts = row["next"]
        assert isinstance(nexts, list)
        table.add_row(str(row["tier"]), str(row["schedule"] or "manual"), "\n".join(nexts) or "-")
    console().print(table)


@click.group("config")
def config_group() -> None:
    """Validate the configuration or print its schema."""


@config_group.command("check")
@click.argument("path", required=False)
@click.pass_obj
def config_check(app: AppContext, path: str | None) -> None:
    """Exit 0 when the config is valid; else exit 2 with one line per problem."""
    target = find_config(path or app.config_path)
    config = load_config(target)
    click.echo(f"{target}: ok ({len(config.tiers)} tiers: {', '.join(config.tiers)})")


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON schema of config.yaml."""
    click.echo(json.dumps(json_schema(), indent=2))


__all__ = ["ConfigError", "config_group", "schedule_command", "upcoming"]
