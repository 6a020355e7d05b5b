"""``schedctl alerts`` and ``schedctl alerts test SINK`` through click's runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from scheduler.cli import cli
from scheduler.kernel.outcome import Outcome
from tests.scheduler.alerts.conftest import FAILED_TESTS, GITHUB_TOKEN, Harness, Recorder


@pytest.fixture
def hook_alerts(httpserver: HTTPServer) -> dict[str, object]:
    return {
        "webhooks": [
            {"name": "hook", "url": httpserver.url_for("/hook")},
            {"name": "signed", "url": httpserver.url_for("/hook"), "secret_env": "NOT_SET"},
        ]
    }


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "alerts", *args],
        env={"SCHEDCTL_GITHUB_TOKEN": GITHUB_TOKEN},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout


def test_lists_alerts_and_pending_deliveries(
    make_harness: Callable[..., Harness],
    write_config: Callable[..., Path],
    hook_alerts: dict[str, object],
) -> None:
    """--json shows the firing fingerprint, the pending row and the disabled sink's reason."""
    path = write_config(alerts=hook_alerts)
    h = make_harness(hook_alerts)
    h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
    code, output = invoke(path, "--json")
    assert code == 0
    data = json.loads(output)
    assert [(a["fingerprint"], a["state"]) for a in data["alerts"]] == [
        ("hourly/tests-failed", "firing")
    ]
    assert [r["sink"] for r in data["deliveries"]["pending"]] == ["hook"]
    sinks = {s["name"]: s for s in data["sinks"]}
    assert sinks["hook"]["enabled"] and not sinks["signed"]["enabled"]
    assert "NOT_SET" in sinks["signed"]["reason"]
    code, text = invoke(path)
    assert code == 0 and "hourly/tests-failed" in text and "pending 1" in text


def test_send_test_message(
    httpserver: HTTPServer, write_config: Callable[..., Path], hook_alerts: dict[str, object]
) -> None:
    """`alerts test hook` posts one test message; unknown and disabled sinks are errors."""
    receiver = Recorder()
    httpserver.expect_request("/hook").respond_with_handler(receiver)
    path = write_config(alerts=hook_alerts)
    code, output = invoke(path, "test", "hook")
    assert code == 0 and "sent a test message" in output
    assert [b["action"] for b in receiver.bodies()] == ["test"]
    result = CliRunner().invoke(cli, ["--config", str(path), "alerts", "test", "nope"])
    assert result.exit_code != 0 and "unknown alert sink 'nope'" in str(result.exception)
    result = CliRunner().invoke(cli, ["--config", str(path), "alerts", "test", "signed"])
    assert "disabled" in str(result.exception)
