"""Rendering helpers shared by commands: JSON, durations, outcome colours, literal text.

Anything that came from a test, a log, a run's reason, a commit, a config file or another
process goes to rich through :func:`line` (or :func:`styled`), never inside a markup string:
``test_x[/a/b.py-None]`` or ``[bold]`` would otherwise be parsed as markup (a ``MarkupError``,
or text that silently vanishes).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from scheduler.kernel.outcome import Outcome

if TYPE_CHECKING:  # rich is imported by the first table or line printed: not for --json
    from rich.console import Console
    from rich.text import Text

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
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def line(*parts: object, missing: str = "-") -> Text:
    """Literal text for rich, joined from ``parts``; nothing in it is read as markup or emoji.

    A :class:`~rich.text.Text` part is kept as is, a ``(text, style)`` tuple is coloured, ``None``
    becomes ``missing`` (a user never sees the string ``None``), anything else is ``str()``-ed.
    """
    from rich.text import Text

    text = Text()
    for part in parts:
        if isinstance(part, Text):
            text.append_text(part)
        elif isinstance(part, tuple) and len(part) == 2:
            value, style = part
            text.append(missing if value is None else str(value), style=str(style))
        else:
            text.append(missing if part is None else str(part))
    return text


def styled(outcome: Outcome) -> Text:
    """The outcome's value in its colour."""
    return line((outcome.value, OUTCOME_STYLE.get(outcome, "magenta")))


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
