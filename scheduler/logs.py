"""structlog set-up, done once by the CLI entry point.

Tests use ``structlog.testing.capture_logs``.

:func:`import_structlog_without_rich` (``schedctl daemon`` and :func:`configure` call it first):
whenever rich is installed, structlog's ``dev`` and ``tracebacks`` modules import it (console,
syntax highlighting, pretty-printing: ~4 MiB of an idle daemon's memory, ~80 ms) for their
rich traceback formatter, which schedctl never uses -- :func:`configure` formats tracebacks
plainly.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any


def import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it; rich itself stays importable afterwards.

    A process that has already imported rich (a command printing tables) or structlog keeps
    what it has. Call it before anything imports structlog (single-threaded start-up).
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        if sys.modules.get("rich", ...) is None:
            del sys.modules["rich"]


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
    import logging

    import_structlog_without_rich()
    import structlog

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
