"""structlog set-up, done once by the CLI entry point.

Tests use ``structlog.testing.capture_logs``.

structlog's import (its console renderer, its stdlib integration) costs a command that logs
nothing about a tenth of a second, so the CLI calls :func:`configure_when_imported`: structlog is
configured the moment anything imports it, and a command that never does never pays for it;
that import hides rich from structlog (see below), as :func:`import_structlog_without_rich` does.
:func:`import_structlog_without_rich` (``schedctl daemon`` and :func:`configure` call it first):
whenever rich is installed, structlog's ``dev`` and ``tracebacks`` modules import it (console,
syntax highlighting, pretty-printing: ~4 MiB of an idle daemon's memory, ~80 ms) for their
rich traceback formatter, which schedctl never uses -- :func:`configure` formats tracebacks
plainly.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Callable, MutableMapping, Sequence
from types import ModuleType
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


def configure_when_imported(json_logs: bool, level: str = "info") -> None:
    """:func:`configure` now if structlog is imported, else as soon as anything imports it."""
    if "structlog" in sys.modules:
        configure(json_logs, level)
        return
    # A second call before the import replaces the first one's settings (in-process tests).
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterImport)]
    sys.meta_path.insert(0, _AfterImport("structlog", lambda: configure(json_logs, level)))


class _AfterImport:
    """Runs ``then`` right after module ``name`` is first executed; removes itself on use.

    A meta path finder by protocol (``find_spec``): subclassing ``importlib.abc``'s would
    import that module for nothing.

    The module is found and loaded by the other finders as usual; only its loader's
    ``exec_module`` is wrapped, so ``then`` sees the module complete, before the ``import``
    statement that asked for it returns.
    """

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not on sys.path as plain files: the other finders import it as usual
        loader = spec.loader
        run = loader.exec_module
        then = self.then

        def exec_module(module: ModuleType) -> None:
            # structlog's dev and tracebacks modules import rich when it is installed (~125 ms:
            # console, pretty-printing, syntax highlighting) for a traceback formatter
            # :func:`configure` never uses: hide rich while structlog itself is executed.
            hidden = "rich" not in sys.modules
            if hidden:
                sys.modules["rich"] = None  # type: ignore[assignment]
            try:
                run(module)
            finally:
                if hidden and sys.modules.get("rich", ...) is None:
                    del sys.modules["rich"]
            then()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
