"""The Alertmanager sink against the real Debian ``alertmanager`` binary on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer

from scheduler.kernel.outcome import Outcome
from tests.conftest import require
from tests.fresh import stop_process
from tests.scheduler.alerts.conftest import FAILED_TESTS, Harness, Recorder
from tests.waiting import wait_for

pytestmark = pytest.mark.prometheus

PASSED = [("tests/test_a.py::test_one", "passed", None)]

AM_CONFIG = """
route:
  receiver: probe
  group_by: [alertname, tier, failure_class, severity]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: probe
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def _binary() -> str | None:
    return shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Alertmanager:
    def __init__(self, url: str, notifications: Recorder) -> None:
        self.url = url
        self.notifications = notifications

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        query = {"filter": 'alertname="SchedctlTierFailing"', **params}
        response = requests.get(f"{self.url}/api/v2/alerts", params=query, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def notified(self, status: str) -> list[dict[str, Any]]:
        return [
            alert
            for body in self.notifications.bodies()
            for alert in body["alerts"]
            if alert["status"] == status
        ]


@pytest.fixture
def alertmanager(tmp_path: Path, httpserver: HTTPServer) -> Iterator[Alertmanager]:
    """A real alertmanager on a free loopback port, notifying a loopback webhook."""
    binary = _binary()
    require(binary is not None, "alertmanager is not installed (scripts/ensure-alertmanager.sh)")
    assert binary is not None
    notifications = Recorder()
    httpserver.expect_request("/am-notify").respond_with_handler(notifications)
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG.format(url=httpserver.url_for("/am-notify")))
    port = _free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return proc.poll() is not None

    try:
        wait_for(ready, 15, "alertmanager to become ready")
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        yield Alertmanager(url, notifications)
    finally:
        stop_process(proc, timeout_s=10)
        log.close()


def test_alert_fires_then_resolves(
    alertmanager: Alertmanager, make_harness: Callable[..., Harness]
) -> None:
    """Alertmanager lists the firing alert with our labels, then notifies it resolved."""
    h = make_harness({"alertmanager": [{"url": alertmanager.url}]})
    record = h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
    h.deliver()
    active = alertmanager.alerts()
    assert len(active) == 1
    alert = active[0]
    assert alert["labels"] == {
        "alertname": "SchedctlTierFailing",
        "tier": "hourly",
        "failure_class": "tests-failed",
        "severity": "warning",
        "host": "gpu-1",
    }
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["run_id"] == str(record.id)
    assert "tests/test_a.py::test_one: assert 1 == 2" in alert["annotations"]["description"]
    wait_for(lambda: len(alertmanager.notified("firing")) == 1, 10, "a firing notification")

    h.finish("hourly", Outcome.PASSED, PASSED)
    h.deliver()
    assert alertmanager.alerts() == []
    wait_for(lambda: len(alertmanager.notified("resolved")) == 1, 10, "a resolved one")
    resolved = alertmanager.notified("resolved")[0]
    assert resolved["labels"]["tier"] == "hourly"
    assert time.strptime(resolved["endsAt"][:19], "%Y-%m-%dT%H:%M:%S")


def test_escalation_replaces_warning_with_critical(
    alertmanager: Alertmanager, make_harness: Callable[..., Harness]
) -> None:
    """After three failures only the critical alert is active; the warning one has ended."""
    h = make_harness({"alertmanager": [{"url": alertmanager.url}]})
    for _ in range(3):
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.deliver()
    severities = [a["labels"]["severity"] for a in alertmanager.alerts()]
    assert severities == ["critical"]
    assert "failing 3 runs in a row" in alertmanager.alerts()[0]["annotations"]["summary"]
