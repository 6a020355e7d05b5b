"""Secrets never reach test processes (issue 20, finding 1): a local tier's test that reads every
``/proc/*/environ`` it can finds none of the daemon's configured secrets."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.api import ApiClient
from scheduler.daemon.lock import StateLock
from tests.conftest import ROOT, SCHEDCTL
from tests.fresh import stop_process
from tests.scheduler.daemon.test_daemon_process import env
from tests.scheduler.run.test_honest_outcomes import project
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

API_TOKEN = "api-token-7f3c1d2e9b"
HMAC_SECRET = "hmac-secret-5a8e0c4f21"
WEBHOOK_URL = "http://127.0.0.1:9/hook-9d2b7e"

SNOOP = f"""
import glob

SECRETS = [{API_TOKEN!r}.encode(), {HMAC_SECRET!r}.encode(), b"hook-9d2b7e"]

def test_no_secret_in_any_environ():
    readable = 0
    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        readable += 1
        found += [(path, s) for s in SECRETS if s in data]
    assert readable > 1  # it did look, at least at itself and its parent
    assert not found, found
"""


def test_local_tier_cannot_see_the_daemons_secrets(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The daemon holds an API token, a webhook URL and HMAC secret in its environment; a
    local-runner test scanning /proc/*/environ passes (finds none of them)."""
    root = project(tmp_path / "p", {"tests/test_snoop.py": SNOOP})
    config = write_config(
        project=root,
        tiers={"snoop": {"schedule": None, "timeout": 120}},
        daemon={"metrics_address": None, "web_address": None, "grace": 2},
        alerts={"webhooks": [{"url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"}]},
    )
    secrets = {"SCHEDCTL_API_TOKEN": API_TOKEN, "HOOK_URL": WEBHOOK_URL, "HOOK_SECRET": HMAC_SECRET}
    state = tmp_path / "state"
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*SCHEDCTL, "--config", str(config), "daemon", "--log-format", "json"],
            cwd=ROOT, env={**env(), **secrets}, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        sock = state / "api.sock"

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            return StateLock.holder(state) == proc.pid and sock.exists()

        wait_for(ready, 30, "the daemon to listen")
        wait_for(lambda: "secret_env_removed" in log_path.read_text(), 30, "the secrets scrub")
        client = ApiClient(unix=sock, timeout=10)
        run_id = client.submit("snoop")["run_id"]

        def final() -> dict[str, object] | None:
            run = client.run(run_id)
            return run if run["outcome"] not in ("queued", "running") else None

        run = wait_for(final, 90, "the snooping run to finish")
        assert run["outcome"] == "passed", run["reason"]
    finally:
        stop_process(proc)
