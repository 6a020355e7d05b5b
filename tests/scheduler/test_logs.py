"""The CLI's logging: structlog configured the moment something imports it, never before."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", LATE_IMPORT],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(e["event"], e["level"], e["token"]) for e in lines] == [("shown", "warning", "***")]
    assert out.stdout == ""


def test_already_imported_structlog_is_configured_now() -> None:
    code = LATE_IMPORT.replace('assert "structlog" not in sys.modules', "import structlog")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    assert [json.loads(line)["event"] for line in out.stderr.splitlines()] == ["shown"]
