"""Tests of the deploy/ artefacts: Prometheus rules and config, Grafana dashboards."""
