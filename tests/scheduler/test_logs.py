"""structlog set-up: configured the moment something imports it (never before), secrets
redacted, plain tracebacks, and structlog imported without rich."""

from __future__ import annotations

import json

from tests.fresh import python_c

LATE_IMPORT = """
import sys
from scheduler.logs import configure_when_imported
configure_when_imported(json_logs=True, level="warning")
assert "structlog" not in sys.modules
import structlog
structlog.get_logger("t").info("hidden")
structlog.get_logger("t").warning("shown", token="s3cret")
"""


def test_structlog_imported_later_is_configured_first() -> None:
    out = python_c(LATE_IMPORT)
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(e["event"], e["level"], e["token"]) for e in lines] == [("shown", "warning", "***")]
    assert out.stdout == ""


def test_already_imported_structlog_is_configured_now() -> None:
    code = LATE_IMPORT.replace('assert "structlog" not in sys.modules', "import structlog")
    out = python_c(code)
    assert [json.loads(line)["event"] for line in out.stderr.splitlines()] == ["shown"]


PROBE = """\
import sys
import scheduler.logs
assert "structlog" not in sys.modules
scheduler.logs.import_structlog_without_rich()
assert "structlog" in sys.modules
print("rich after structlog:", "rich" in sys.modules)
scheduler.logs.configure(json_logs=False)
import structlog
log = structlog.get_logger("t")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed", api_token="hunter2")
import rich.table  # still importable: only structlog's own import was kept from it
print("rich importable:", rich.table.Table is not None)
"""


def test_structlog_comes_without_rich_and_renders_plain_tracebacks() -> None:
    out = python_c(PROBE)
    assert "rich after structlog: False" in out.stdout
    assert "rich importable: True" in out.stdout
    assert "Traceback (most recent call last)" in out.stderr  # the plain formatter
    assert "ValueError: boom" in out.stderr
    assert "hunter2" not in out.stderr and "api_token" in out.stderr
    assert "╭" not in out.stderr  # no rich panel


def test_a_process_that_imported_rich_first_keeps_it() -> None:
    code = (
        "import rich, scheduler.logs\nscheduler.logs.import_structlog_without_rich()\n"
        "import structlog.dev\nprint(structlog.dev.rich is rich)"
    )
    out = python_c(code)
    assert out.stdout.strip() == "True"


def test_structlog_imported_after_set_up_comes_without_rich() -> None:
    """The CLI's path (``configure_when_imported``, then a command imports structlog): the
    import that configures structlog also hides rich from it; rich stays importable."""
    code = LATE_IMPORT + (
        'print("rich after structlog:", "rich" in sys.modules)\n'
        "import rich.table\n"
        'print("rich importable:", rich.table.Table is not None)\n'
    )
    out = python_c(code)
    assert "rich after structlog: False" in out.stdout
    assert "rich importable: True" in out.stdout
    assert [json.loads(line)["event"] for line in out.stderr.splitlines()] == ["shown"]
