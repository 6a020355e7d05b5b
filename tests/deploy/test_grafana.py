"""Grafana dashboards and provisioning: structure, the $host variable, metric names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import (
    DASHBOARDS,
    GRAFANA_DIR,
    SYNTHETIC,
    dashboard_exprs,
    load_dashboard,
    metric_names,
    substitute,
)

SELECTOR = re.compile(r"\b(schedctl_\w+|up)\b(\{[^}]*\})?(?!\s*\()")
PROCESS = {"process_start_time_seconds"}


def test_the_tiers_and_gpus_dashboards_exist() -> None:
    """Both dashboards the issue asks for are shipped."""
    assert {p.name for p in DASHBOARDS} >= {"tiers.json", "gpus.json"}


def test_the_test_health_dashboard_covers_what_issue_15_asks() -> None:
    """Pass rate, duration percentiles, flaky, quarantined, reruns, slowest-tests table."""
    path = GRAFANA_DIR / "dashboards" / "test-health.json"
    panels = {p["title"]: p for p in load_dashboard(path)["panels"]}
    used = {
        title: {n for t in p["targets"] for n in metric_names(substitute(t["expr"]))}
        for title, p in panels.items()
    }
    assert used["Test pass rate per tier"] == {"schedctl_tests_total"}
    assert used["Test duration percentiles per tier"] == {"schedctl_test_duration_seconds_bucket"}
    assert used["Flaky tests per tier"] == {"schedctl_tier_flaky_tests"}
    assert used["Quarantined tests"] == {"schedctl_quarantined_tests"}
    assert used["Reruns per tier"] == {"schedctl_test_reruns_total"}
    slowest = panels["Slowest tests (newest run, top 20 per tier)"]
    assert slowest["type"] == "table"
    assert used[slowest["title"]] == {"schedctl_slowest_test_duration_seconds"}
    quantiles = [t["expr"].split(",")[0] for t in panels["Test duration percentiles per tier"]
                 ["targets"]]  # fmt: skip
    assert quantiles == [f"histogram_quantile({q}" for q in ("0.5", "0.9", "0.99")]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
class TestDashboard:
    def test_host_variable_selects_instances(self, path: Path) -> None:
        """$host is a multi-value query variable over the instance label, with All."""
        variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
        host = variables["host"]
        assert host["type"] == "query"
        assert re.fullmatch(r"label_values\(schedctl_\w+, instance\)", host["definition"])
        assert host["multi"] and host["includeAll"] and host["allValue"] == ".*"
        assert variables["datasource"]["type"] == "datasource"

    def test_every_selector_is_filtered_by_host(self, path: Path) -> None:
        """Each metric selector in each target carries instance=~"$host"."""
        unfiltered = [
            (expr, name)
            for expr in dashboard_exprs(path)
            for name, matchers in SELECTOR.findall(expr)
            if 'instance=~"$host"' not in (matchers or "")
        ]
        assert unfiltered == []

    def test_panels_use_the_datasource_variable_and_have_unique_ids(self, path: Path) -> None:
        """Panels and targets point at ${datasource}; panel ids are unique; none lacks a query."""
        panels = load_dashboard(path)["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        for panel in panels:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_metrics_are_exported_by_the_daemon(self, path: Path, exported: set[str]) -> None:
        """Every metric a panel queries is in a scrape of a fully populated Metrics."""
        names = {n for expr in dashboard_exprs(path) for n in metric_names(substitute(expr))}
        assert names - exported - SYNTHETIC - PROCESS == set()


def test_the_host_variable_query_metric_is_exported(exported: set[str]) -> None:
    """The metric the $host variable lists instances from exists."""
    for path in DASHBOARDS:
        host = next(v for v in load_dashboard(path)["templating"]["list"] if v["name"] == "host")
        assert re.findall(r"\((\w+),", host["definition"])[0] in exported


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    """The datasource is Prometheus and the dashboard provider reads files."""
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "schedctl.yml").read_text()
    )
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "schedctl.yml").read_text()
    )
    assert providers["providers"][0]["type"] == "file"
    assert providers["providers"][0]["options"]["path"]
