"""The real daemon scraped by Debian's real prometheus: runs, every PromQL, restart.

Run counters come from the store's rows, so runs made by ``schedctl run`` in another process
are counted by the daemon's scrape exactly like the daemon's own. Only the fire lag and GPU wait
histograms are fed by the daemon's in-process events; no slot fires in this test (the tiers are
scheduled on 1 January), so those histograms are exported without samples.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scheduler.gpu import write_fake_gpus
from tests import waiting
from tests.conftest import ROOT, SCHEDCTL, require
from tests.deploy.promql import (
    GRAFANA_DIR,
    RULES,
    SYNTHETIC,
    all_exprs,
    exported_names,
    have_prometheus,
    load_dashboard,
    metric_names,
    rules,
    substitute,
)
from tests.fresh import stop_process

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

T = TypeVar("T")
TIERS_DASHBOARD = GRAFANA_DIR / "dashboards" / "tiers.json"
FAR_AWAY = "0 0 1 1 *"  # 1 January: never fires during the test

TEST_FILE = """
import pytest


@pytest.mark.hourly
def test_green():
    assert True


@pytest.mark.daily
def test_red():
    assert 1 == 2


@pytest.mark.daily
def test_also_green():
    assert True
"""

PYTEST_INI = """[pytest]
markers =
    hourly: hourly tier
    daily: daily tier
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    """:func:`tests.waiting.wait_for` for HTTP probes: a refused connection means "not yet"."""
    errors: list[OSError] = []

    def attempt() -> T | None:
        try:
            return probe()
        except OSError as exc:  # not listening yet
            errors.append(exc)
            return None

    try:
        return waiting.wait_for(attempt, timeout_s, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc} ({errors[-1]!r})" if errors else str(exc)) from None


class Scrape:
    """One /metrics body, with sample lookup by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self._values.get((name, frozenset(labels.items())))


@dataclass
class Box:
    """One schedctl host: config, the daemon's port, and how to run things there."""

    tmp: Path
    config: Path
    port: int
    env: dict[str, str]
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_daemon(self) -> None:
        log = (self.tmp / "daemon.log").open("ab")
        self.daemon = subprocess.Popen(
            [*SCHEDCTL, "--config", str(self.config), "daemon"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool | None:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise AssertionError(f"daemon exited: {(self.tmp / 'daemon.log').read_text()}")
            return True if http_get(self.metrics_url + "/readyz")[0] == 200 else None

        wait_for("the daemon's /readyz", ready)

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            assert stop_process(self.daemon) == 0, (self.tmp / "daemon.log").read_text()
            self.daemon = None

    def run(self, tier: str) -> dict[str, Any]:
        result = subprocess.run(
            [*SCHEDCTL, "--config", str(self.config), "run", tier, "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary

    def scrape(self) -> Scrape:
        status, body = http_get(self.metrics_url + "/metrics")
        assert status == 200
        return Scrape(body)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    require(have_prometheus(), "prometheus/promtool not installed (scripts/ensure-prometheus.sh)")
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_tiers.py").write_text(TEST_FILE)
    (project / "pytest.ini").write_text(PYTEST_INI)
    port = free_port()
    config = {
        "state_dir": str(tmp_path / "state"),
        "runner": "local",
        "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
        "project": {"path": str(project)},
        "tiers": {
            "hourly": {"schedule": FAR_AWAY, "markers": "hourly", "timeout": 120},
            "daily": {"schedule": FAR_AWAY, "markers": "daily", "timeout": 120},
        },
        "daemon": {"metrics_address": f"127.0.0.1:{port}", "web_address": None, "grace": 5},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    gpus = tmp_path / "gpus.json"
    write_fake_gpus(
        gpus,
        [
            {"index": 0, "uuid": "GPU-0", "memory_total_mib": 81559, "temperature_c": 35},
            {
                "index": 1,
                "uuid": "GPU-1",
                "memory_total_mib": 81559,
                "memory_used_mib": 30000,
                "utilization_pct": 88,
                "processes": [{"pid": 4242, "used_memory_mib": 30000}],
            },
        ],
    )
    env = {**os.environ, "SCHEDCTL_FAKE_GPUS": str(gpus), "PYTHONPATH": str(ROOT)}
    env.pop("CI", None)  # the runs under test must not inherit CI-only behaviour
    b = Box(tmp_path, path, port, env)
    try:
        yield b
    finally:
        if b.daemon is not None:
            stop_process(b.daemon)


@pytest.fixture
def prometheus(tmp_path: Path, box: Box) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "schedctl", "static_configs": [{"targets": [f"127.0.0.1:{box.port}"]}]}
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("prometheus /-/ready", lambda: http_get(url + "/-/ready")[0] == 200 or None)
        yield url
    finally:
        stop_process(proc)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    params = urllib.parse.urlencode({"query": expr})
    _, body = http_get(f"{prometheus}/api/v1/query?{params}")
    result: dict[str, Any] = json.loads(body)
    return result


def test_daemon_metrics_through_a_real_prometheus(box: Box, prometheus: str) -> None:
    """Manual runs show up with the right counts and timestamps; every PromQL works; restart."""
    box.start_daemon()
    # Prometheus must see the counters at 0 first, as it would on a box that was up before.
    wait_for("prometheus to scrape the daemon", lambda: prometheus_sees_runs(prometheus, 0))
    red = box.run("daily")
    green = box.run("hourly")
    assert (red["outcome"], green["outcome"]) == ("failed", "passed")

    scrape = box.scrape()
    value = scrape.value
    assert value("schedctl_runs_total", tier="daily", outcome="failed", trigger="manual") == 1
    assert value("schedctl_runs_total", tier="hourly", outcome="passed", trigger="manual") == 1
    assert value("schedctl_runs_total", tier="hourly", outcome="failed", trigger="manual") == 0
    assert value("schedctl_tests_total", tier="daily", outcome="failed") == 1
    assert value("schedctl_tests_total", tier="daily", outcome="passed") == 1
    finished = {
        s["tier"]: datetime.fromisoformat(s["finished_at"]).timestamp() for s in (red, green)
    }
    assert value("schedctl_tier_last_run_timestamp_seconds", tier="daily") == pytest.approx(
        finished["daily"], abs=1e-3
    )
    assert value("schedctl_tier_last_success_timestamp_seconds", tier="hourly") == pytest.approx(
        finished["hourly"], abs=1e-3
    )
    assert value("schedctl_tier_last_success_timestamp_seconds", tier="daily") is None
    assert value("schedctl_tier_consecutive_failures", tier="daily") == 1
    assert value("schedctl_gpu_available", gpu="1", uuid="GPU-1") == 0
    assert value("schedctl_gpu_available", gpu="0", uuid="GPU-0") == 1

    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")

    wait_for("prometheus to scrape the runs", lambda: prometheus_sees_runs(prometheus, 1))
    exported = exported_names(scrape.text) | SYNTHETIC
    problems = []
    for where, expr in all_exprs().items():
        concrete = substitute(expr)
        unknown = metric_names(concrete) - exported
        if unknown:
            problems.append(f"{where}: not exported by the daemon: {sorted(unknown)}")
        answer = query(prometheus, concrete)
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}")
    assert problems == []
    assert pass_rates(prometheus) == {"hourly": 1.0, "daily": 0.0}
    assert_rules_evaluate(prometheus)

    box.stop_daemon()
    box.start_daemon()
    value = box.scrape().value
    assert value("schedctl_runs_total", tier="daily", outcome="failed", trigger="manual") == 0
    assert value("schedctl_tier_last_success_timestamp_seconds", tier="hourly") == pytest.approx(
        finished["hourly"], abs=1e-3
    )
    assert value("schedctl_tier_consecutive_failures", tier="daily") == 1


def prometheus_sees_runs(prometheus: str, count: int) -> bool | None:
    """True once Prometheus holds ``count`` failed daily and passed hourly manual runs."""
    selector = 'schedctl_runs_total{trigger="manual", outcome=~"failed|passed"}'
    values = {
        (r["metric"]["tier"], r["metric"]["outcome"]): float(r["value"][1])
        for r in query(prometheus, selector)["data"]["result"]
    }
    wanted = [("daily", "failed"), ("hourly", "passed")]
    return True if [values.get(key) for key in wanted] == [float(count)] * 2 else None


def pass_rates(prometheus: str) -> dict[str, float]:
    """The Tiers dashboard's run pass rate panel, evaluated by Prometheus, per tier."""
    panel = next(
        p for p in load_dashboard(TIERS_DASHBOARD)["panels"] if p["title"].startswith("Run pass")
    )
    answer = query(prometheus, substitute(panel["targets"][0]["expr"]))
    return {r["metric"]["tier"]: float(r["value"][1]) for r in answer["data"]["result"]}


def assert_rules_evaluate(prometheus: str) -> None:
    """Every alert rule was loaded and evaluated against the live data without error."""
    names = {rule["alert"] for rule in rules()}

    def evaluated() -> list[dict[str, Any]] | None:
        _, body = http_get(prometheus + "/api/v1/rules")
        loaded = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        done = all(r.get("lastEvaluation", "").startswith("20") for r in loaded)
        return loaded if done and {r["name"] for r in loaded} == names else None

    loaded = wait_for("the alert rules to be evaluated", evaluated)
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
