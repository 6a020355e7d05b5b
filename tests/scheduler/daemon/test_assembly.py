"""The daemon imports what its configuration uses: no alert sinks, no requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SUITE

PROBE = """
import json, sys
from scheduler.config import config_from_mapping
from scheduler.daemon.assembly import build_dispatcher, build_services
from scheduler.store.engine import Store

config = config_from_mapping(json.loads(sys.argv[1]))
store = Store(config.db_path)
dispatcher = build_dispatcher(config, store)
services = build_services(config, store, dispatcher)
print(json.dumps({
    "services": sorted(type(s).__name__ for s in services),
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


def assemble(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data = {
        "state_dir": str(tmp_path / "state"),
        "runner": "local",
        "local": {"allow_root": True},
        "project": {"path": str(SUITE)},
        "daemon": {"metrics_address": None, "web_address": None},
        "tiers": {"hourly": {"schedule": "15 * * * *", "timeout": 60, "markers": "hourly"}},
        **extra,
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(data)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_no_alert_sinks_no_requests_no_docker(tmp_path: Path) -> None:
    built = assemble(tmp_path)
    assert "sqlalchemy" in built["modules"]  # the probe does see the imports
    assert "requests" not in built["modules"]
    assert "docker" not in built["modules"]
    assert "DeliveryWorker" not in built["services"]


@pytest.mark.parametrize("sink", ["webhooks"])
def test_a_configured_sink_builds_the_alert_worker(tmp_path: Path, sink: str) -> None:
    built = assemble(tmp_path, alerts={sink: [{"name": "hook", "url": "http://127.0.0.1:9/hook"}]})
    assert "requests" in built["modules"]
    assert "DeliveryWorker" in built["services"]
