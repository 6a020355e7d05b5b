"""Alert rules and scrape config: promtool check/test, one firing and one quiet case per rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require
from tests.deploy.promql import (
    PROMETHEUS_DIR,
    RULES,
    RULES_TEST,
    SYNTHETIC,
    all_exprs,
    have_promtool,
    metric_names,
    rules,
    substitute,
)

PROCESS = {"process_start_time_seconds"}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    require(have_promtool(), "promtool is not installed (scripts/ensure-prometheus.sh)")
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_every_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    """rules_test.yml expects each alert to fire somewhere and to stay quiet somewhere."""
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} never quiet"


def test_rules_use_only_exported_metrics(exported: set[str]) -> None:
    """Every metric a rule selects is exported by the daemon (or made by Prometheus)."""
    names = {n for rule in rules() for n in metric_names(str(rule["expr"]))}
    assert names - exported - SYNTHETIC - PROCESS == set()


@pytest.mark.prometheus
def test_promtool_check_rules() -> None:
    """promtool accepts rules.yml."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_pass() -> None:
    """promtool test rules passes every case of rules_test.yml."""
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.prometheus
def test_unit_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    """The unit tests fail when a rule's threshold changes (they can fail)."""
    broken = RULES.read_text().replace(
        "schedctl_tier_consecutive_failures >= 3", "schedctl_tier_consecutive_failures >= 4"
    )
    assert broken != RULES.read_text()
    (tmp_path / "rules.yml").write_text(broken)
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.read_text())
    result = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SchedctlTierFailing" in result.stdout + result.stderr


@pytest.mark.prometheus
def test_example_scrape_config_is_valid(tmp_path: Path) -> None:
    """prometheus.yml passes promtool check config (rule path pointed at this checkout)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["schedctl"]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each dashboard and rule expression is valid PromQL (as a recording rule for promtool)."""
    exprs = all_exprs()
    recording = {
        "groups": [
            {
                "name": "parse",
                "rules": [
                    {"record": f"parse:expr_{i}", "expr": substitute(expr)}
                    for i, expr in enumerate(exprs.values())
                ],
            }
        ]
    }
    path = tmp_path / "parse.yml"
    path.write_text(yaml.safe_dump(recording))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
