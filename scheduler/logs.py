"""structlog set-up, done once by the CLI entry point.

Tests use ``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = ("token", "secret", "password", "authorization", "webhook_url")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank out any field whose name says it carries a secret."""
    for key in list(event_dict):
        if any(s in key.lower() for s in SECRET_KEYS):
            event_dict[key] = "***"
    return event_dict


def configure(json_logs: bool, level: str = "info") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        # plain tracebacks: rich's traceback formatter costs start-up time and prints locals
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
