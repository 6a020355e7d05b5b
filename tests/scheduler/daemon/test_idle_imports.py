"""What an idle daemon has imported: only what its configuration uses (issue 21, idle RSS).

A real ``schedctl daemon`` process on the default configuration (local runner, metrics and web
pages on, no alert sinks, no GPU tier) reports its ``sys.modules`` when sent SIGUSR1. Libraries
that only some configurations or the first request need -- Jinja2 until a page is asked for,
prometheus_client until the first scrape, rich, the PostgreSQL dialect, requests, the docker
SDK, NVML, the alert sinks -- must not be there, so a module-level import cannot silently grow
the daemon's memory again (``bench/bench_daemon_rss.py`` measures the memory itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SUITE, quiet_hourly
from tests.fresh import stop_process
from tests.waiting import wait_for

# The daemon as a user starts it, plus a SIGUSR1 handler that writes sys.modules to a file.
PROBE = """\
import json, os, signal, sys

def dump(*_):
    path = os.environ["SCHEDCTL_TEST_MODULES"]
    with open(path + ".tmp", "w") as fh:
        json.dump(sorted(sys.modules), fh)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR1, dump)
from scheduler.cli import main
main()
"""

# Never imported by an idle daemon on the default configuration.
NOT_AT_IDLE = (
    "jinja2",  # the web pages and their templates: on the first page request
    "markupsafe",
    "scheduler.web.pages",
    "scheduler.history.stats",
    "prometheus_client",  # the /metrics exposition: on the first scrape
    "rich",  # the read commands' tables; structlog's rich tracebacks
    "pygments",
    "sqlalchemy.dialects.postgresql",  # a SQLite store
    "psycopg",
    "requests",  # alert sinks: none configured
    "urllib3",
    "scheduler.alerts",
    "docker",  # the local runner
    "pynvml",  # no tier needs a GPU: no NVML, no pool, no GPU collector
    "scheduler.gpu.pool",
    "scheduler.gpu.nvml",
    "scheduler.metrics.gpus",
    "xml.etree",  # JUnit XML: only when a run's JSON-lines results are missing
    "ctypes",  # wiping secrets from the initial environment: only when one was there
    "scheduler.api.client",  # `schedctl status`'s side of the control API
    "scheduler.cli.output",
)
# Imported by every idle daemon: proof that the probe sees what the daemon imported.
AT_IDLE = ("apscheduler", "sqlalchemy", "scheduler.daemon.scheduler", "scheduler.web.server")


class IdleDaemon:
    def __init__(self, proc: subprocess.Popen[str], log: Path, modules: Path) -> None:
        self.proc = proc
        self.log = log
        self.modules = modules

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def event(self, name: str) -> dict[str, object] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def loaded(self) -> set[str]:
        """The daemon's ``sys.modules`` now (asked with SIGUSR1, written by the daemon)."""
        self.modules.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        wait_for(self.modules.exists, 60, "the daemon to write its sys.modules")
        names = json.loads(self.modules.read_text())
        assert isinstance(names, list)
        return {str(name) for name in names}


@pytest.fixture
def idle_daemon(tmp_path: Path) -> Iterator[IdleDaemon]:
    now = datetime.now(UTC)
    hourly, _ = quiet_hourly(now)
    daily = f"{hourly.split()[0]} {(now.hour + 12) % 24} * * *"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "timezone": "UTC",
                "runner": "local",
                "local": {"allow_root": True},
                "daemon": {"metrics_address": "127.0.0.1:0", "web_address": "127.0.0.1:0"},
                "project": {"path": str(SUITE)},
                "tiers": {
                    # no slot falls due while the test runs: a fire would import the run path
                    "hourly": {"schedule": hourly, "timeout": "30m", "markers": "hourly"},
                    "daily": {"schedule": daily, "timeout": "90m", "markers": "daily"},
                },
            }
        )
    )
    log = tmp_path / "daemon.log"
    modules = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env.update(PYTHONPATH=str(ROOT), SCHEDCTL_TEST_MODULES=str(modules))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, "--config", str(config), "daemon"],
            cwd=tmp_path, env=env, stdout=out, stderr=out, text=True,
        )  # fmt: skip
    daemon = IdleDaemon(proc, log, modules)
    try:
        wait_for(
            lambda: daemon.event("daemon_started") or proc.poll() is not None,
            120,
            "daemon_started in the daemon's log",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        yield daemon
    finally:
        stop_process(proc, timeout_s=60)


def _has(loaded: set[str], name: str) -> bool:
    return name in loaded or any(module.startswith(name + ".") for module in loaded)


def test_an_idle_daemon_imports_only_what_its_configuration_uses(idle_daemon: IdleDaemon) -> None:
    loaded = idle_daemon.loaded()
    assert all(_has(loaded, name) for name in AT_IDLE), sorted(set(AT_IDLE) - loaded)
    unexpected = sorted(name for name in NOT_AT_IDLE if _has(loaded, name))
    assert not unexpected, f"an idle daemon imported {unexpected}"


def _get(daemon: IdleDaemon, listening_event: str, path: str) -> str:
    listening = daemon.event(listening_event)
    assert listening is not None and isinstance(listening.get("url"), str), listening_event
    url = str(listening["url"]).rstrip("/")
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url + path, timeout=60) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_the_first_page_loads_jinja2_and_the_first_scrape_prometheus_client(
    idle_daemon: IdleDaemon,
) -> None:
    loaded = idle_daemon.loaded()
    assert not _has(loaded, "jinja2") and not _has(loaded, "prometheus_client")
    page = _get(idle_daemon, "web_listening", "/")
    assert "<html" in page.lower() and "hourly" in page
    loaded = idle_daemon.loaded()
    assert _has(loaded, "jinja2") and _has(loaded, "scheduler.web.pages")
    assert not _has(loaded, "prometheus_client")
    scrape = _get(idle_daemon, "metrics_listening", "/metrics")
    assert 'schedctl_runs_total{outcome="passed",tier="hourly",trigger="schedule"} 0.0' in scrape
    assert "schedctl_build_info{" in scrape and "process_resident_memory_bytes" in scrape
    assert _has(idle_daemon.loaded(), "prometheus_client")
