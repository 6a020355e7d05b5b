"""``schedctl web`` as a user types it: serves the store, stops on SIGTERM, refuses bad binds."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
from pathlib import Path

from scheduler.store.engine import Store
from tests.conftest import ROOT, SCHEDCTL
from tests.scheduler.web.seed import seed

ENV = {k: v for k, v in os.environ.items() if k != "SCHEDCTL_API_TOKEN"}
ENV["PYTHONPATH"] = str(ROOT)


def schedctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCHEDCTL, "web", *args], capture_output=True, text=True, env=ENV,
                          timeout=60, cwd=cwd, check=False)  # fmt: skip


def test_schedctl_web_serves_a_store_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "state" / "schedctl.db"
    seeded = seed(Store(db), tmp_path / "runs")
    proc = subprocess.Popen([*SCHEDCTL, "web", "--db", str(db), "--address", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            cwd=tmp_path)  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.search(r"serving http://127\.0\.0\.1:(\d+)/", banner)
        assert match, banner + (proc.stderr.read() if proc.stderr else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        conn.request("GET", f"/runs/{seeded.red_run}")
        response = conn.getresponse()
        assert response.status == 200 and b"test_breaks" in response.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


def test_a_non_loopback_address_without_a_token_exits_2_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "schedctl.db"
    Store(db)
    done = schedctl(tmp_path, "--db", str(db), "--address", "0.0.0.0:0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--address 0.0.0.0:0 is not a loopback address" in lines[0]


def test_a_missing_store_or_bad_day_exits_2(tmp_path: Path) -> None:
    done = schedctl(tmp_path, "--db", str(tmp_path / "nope.db"))
    assert done.returncode == 2 and "no such store file" in done.stderr
    db = tmp_path / "schedctl.db"
    Store(db)
    done = schedctl(tmp_path, "--db", str(db), "--as-of", "March")
    assert done.returncode == 2 and "--as-of 'March'" in done.stderr
