"""Rendering helpers shared by commands: JSON, durations, outcome colours."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.console import Console

from scheduler.kernel.outcome import Outcome

OUTCOME_STYLE = {
    Outcome.PASSED: "green",
    Outcome.FAILED: "red",
    Outcome.ERROR: "red",
    Outcome.NO_TESTS: "yellow",
    Outcome.TIMEOUT: "red",
    Outcome.OOM: "red",
    Outcome.RUNNING: "cyan",
    Outcome.QUEUED: "cyan",
}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def styled(outcome: Outcome) -> str:
    style = OUTCOME_STYLE.get(outcome, "magenta")
    return f"[{style}]{outcome.value}[/{style}]"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"
