"""End to end through the real CLI process: config -> run -> results -> store -> show/logs."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scheduler.alerts.quarantine import QuarantineExpiry
from scheduler.config import load_config
from scheduler.store import Store
from scheduler.store.engine import QuarantineRow
from tests.conftest import ROOT, SCHEDCTL, SUITE, tier
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def schedctl(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCHEDCTL, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = schedctl(config, "run", *args, "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def plain_pytest_counts(project: Path, markers: str) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", markers],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1]
    counts = {k: 0 for k in ("passed", "failed", "skipped")}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped)", summary):
        counts[word] = int(number)
    return counts


@pytest.mark.parametrize("markers", ["hourly", "daily or not hourly"])
def test_counts_match_plain_pytest(write_config: Callable[..., Path], markers: str) -> None:
    """A tier's run on examples/suite gives the same counts as plain pytest -m EXPR."""
    config = write_config(tiers={"t": tier(markers=markers)})
    code, result = run_json(config, "t")
    expected = plain_pytest_counts(SUITE, markers)
    assert code == 0 and result["outcome"] == "passed"
    assert {k: result["counts"][k] for k in expected} == expected
    assert expected["passed"] > 0
    assert set(result) >= {
        "run_id",
        "tier",
        "outcome",
        "exit_code",
        "counts",
        "duration_s",
        "started_at",
        "finished_at",
    }


def test_failing_suite(
    write_config: Callable[..., Path], fixture_project: Callable[[str], Path]
) -> None:
    """One failing test -> failed, exit 1, and show names the failing nodeid."""
    config = write_config(project=fixture_project("failing"), tiers={"hourly": tier(markers=None)})
    code, result = run_json(config, "hourly")
    assert (code, result["outcome"], result["exit_code"]) == (1, "failed", 1)
    shown = json.loads(schedctl(config, "show", str(result["run_id"]), "--json").stdout)
    failing = [t["nodeid"] for t in shown["tests"] if t["outcome"] == "failed"]
    assert len(failing) == 1 and failing[0] in result["reason"]
    text = schedctl(config, "show", str(result["run_id"])).stdout
    assert failing[0] in text and "failed" in text


def _processes_in(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_hanging_suite_times_out(
    write_config: Callable[..., Path], fixture_project: Callable[[str], Path]
) -> None:
    """A hanging test with timeout 3 s -> timeout, the process tree gone within deadline + 5 s."""
    project = fixture_project("hanging")
    config = write_config(project=project, tiers={"hourly": tier(timeout=3)})
    t0 = time.monotonic()
    code, result = run_json(config, "hourly")
    assert time.monotonic() - t0 < 3 + 5 + 5  # + interpreter start-up of the CLI itself
    assert (code, result["outcome"]) == (1, "timeout")
    assert _processes_in(project) == []


def test_no_tests_selected(write_config: Callable[..., Path]) -> None:
    """A marker expression selecting nothing -> no-tests, exit 1 (never passed)."""
    config = write_config()
    code, result = run_json(config, "hourly", "-m", "hourly and not hourly")
    assert (code, result["outcome"], result["exit_code"]) == (1, "no-tests", 5)


def test_syntax_error_is_error(
    write_config: Callable[..., Path], fixture_project: Callable[[str], Path]
) -> None:
    """A syntax error in a test file -> error, naming the file."""
    config = write_config(
        project=fixture_project("syntax_error"), tiers={"hourly": tier(markers=None)}
    )
    code, result = run_json(config, "hourly")
    assert (code, result["outcome"]) == (1, "error")


@pytest.mark.parametrize(
    ("tiers", "needle"),
    [
        ({"hourly": tier(schedule="99 * * * *")}, "tiers.hourly.schedule"),
        ({"hourly": tier(timeout=-5)}, "tiers.hourly.timeout"),
        ({"hourly": tier(colour="red")}, "tiers.hourly.colour: unknown key"),
    ],
)
def test_invalid_config_exits_2_and_writes_nothing(
    write_config: Callable[..., Path], tmp_path: Path, tiers: dict[str, Any], needle: str
) -> None:
    """Bad cron, negative timeout, unknown key -> exit 2 naming the key; no store is created."""
    config = write_config(tiers=tiers)
    for args in (["run", "hourly"], ["config", "check"]):
        proc = schedctl(config, *args)
        assert proc.returncode == 2
        assert needle in proc.stderr and str(config) in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()


def test_unknown_tier_exits_2(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """schedctl run with an unknown tier names it, exits 2, records nothing."""
    config = write_config()
    proc = schedctl(config, "run", "nightly")
    assert proc.returncode == 2 and "unknown tier 'nightly'" in proc.stderr
    runs = schedctl(config, "runs", "--json")
    assert json.loads(runs.stdout) == []


def test_runs_show_logs(write_config: Callable[..., Path]) -> None:
    """runs lists the run, show gives per-test results, logs prints pytest's output."""
    config = write_config()
    _, result = run_json(config, "hourly")
    listed = json.loads(schedctl(config, "runs", "--json").stdout)
    assert [r["id"] for r in listed] == [result["run_id"]]
    shown = json.loads(schedctl(config, "show", str(result["run_id"]), "--json").stdout)
    assert len(shown["tests"]) == result["counts"]["passed"] + result["counts"]["skipped"]
    assert all({"nodeid", "outcome", "duration_s"} <= set(t) for t in shown["tests"])
    logs = schedctl(config, "logs", str(result["run_id"]))
    assert "passed" in logs.stdout
    missing = schedctl(config, "show", "999")
    assert missing.returncode == 2 and "no run with id 999" in missing.stderr


def test_a_run_checkpoints_the_wal_while_its_tests_run(write_config: Callable[..., Path]) -> None:
    """What the WAL held before the run is in the database file after it, though the WAL was
    far below the end-of-run threshold: the run checkpointed it while its tests ran, so that
    its finish wrote into a checkpointed store."""
    config = write_config()
    path = load_config(config).state_dir / "schedctl.db"
    store = Store(path)
    store.set_meta("before_the_run", "in the WAL")
    assert 0 < store.wal_bytes() < 1 << 20
    # Kept open throughout: the last connection to close checkpoints (SQLite), so neither
    # this one's close nor the CLI's exit may be the one that did.
    code, _ = run_json(config, "hourly")
    assert code == 0
    # The database file alone (no WAL beside it): only checkpointed pages are there.
    alone = path.with_name("alone.db")
    alone.write_bytes(path.read_bytes())
    conn = sqlite3.connect(f"file:{alone}?mode=ro", uri=True)
    try:
        found = conn.execute(
            "SELECT value FROM schedctl_meta WHERE key = 'before_the_run'"
        ).fetchall()
    finally:
        conn.close()
        store.close()
    assert found == [("in the WAL",)]


def test_config_check_and_schema() -> None:
    """config check accepts the root config; schema prints JSON naming the tier keys."""
    root = SUITE.parent.parent / "config.yaml"
    proc = subprocess.run(
        [*SCHEDCTL, "config", "check", str(root)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(
        subprocess.run(
            [*SCHEDCTL, "config", "schema"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert "timeout" in schema["$defs"]["TierConfig"]["properties"]


def test_schedule_json_reference_tiers() -> None:
    """schedule --json lists the next fires per tier in UTC; weekly falls on Sundays."""
    root = SUITE.parent.parent / "config.yaml"
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(root), "schedule", "--count", "3", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {row["tier"]: row["next"] for row in json.loads(proc.stdout)}
    from datetime import datetime

    weekly = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in rows["weekly"]]
    assert all(t.weekday() == 6 and (t.hour, t.minute) == (3, 0) for t in weekly)
    hourly = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in rows["hourly"]]
    assert all(t.minute == 15 for t in hourly) and len(hourly) == 3
    assert all(t.endswith("Z") for t in rows["daily"])


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_killed_cli_local_run_is_cleaned_up_by_the_next_run(
    write_config: Callable[..., Path], fixture_project: Callable[[str], Path], tmp_path: Path
) -> None:
    """kill -9 of the CLI mid-run: the next run kills its orphaned tests, marks it interrupted."""
    import signal

    pidfile = tmp_path / "pids"
    config = write_config(
        project=fixture_project("hanging"),
        tiers={
            "hourly": tier(timeout=300, env={"SCHEDCTL_FIXTURE_PIDFILE": str(pidfile)}),
            "quick": tier(args=["-k", "quick"]),
        },
    )
    cli = subprocess.Popen(
        [*SCHEDCTL, "--config", str(config), "run", "hourly", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2,
        60,
        "the hanging test to write its two pids",
    )
    pids = [int(p) for p in pidfile.read_text().split()]
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    assert not any(_gone(p) for p in pids), "the tests should outlive the killed CLI"
    code, result = run_json(config, "quick")
    assert (code, result["outcome"]) == (0, "passed")
    wait_for(lambda: all(_gone(p) for p in pids), 30, f"the next run to reap {pids}")
    first = json.loads(schedctl(config, "show", "1", "--json").stdout)
    assert first["outcome"] == "interrupted"


def test_json_errors_are_json_too(write_config: Callable[..., Path]) -> None:
    """With --json a usage error still prints one JSON object on stdout, and exits 2."""
    config = write_config()
    code, result = run_json(config, "nightly")
    assert code == 2 and result["exit_code"] == 2
    assert "unknown tier 'nightly'" in result["error"]


def test_plain_run_alerts_an_expired_quarantine_once(write_config: Callable[..., Path]) -> None:
    """Without a daemon, `schedctl run` queues the expiry alert; a second run and the daemon's
    listener afterwards find it claimed and queue nothing more."""
    config_path = write_config(
        tiers={"hourly": tier()},
        alerts={"webhooks": [{"name": "lab", "url": "http://127.0.0.1:9/hook"}]},
    )
    config = load_config(config_path)
    store = Store(config.db_path)
    now = datetime.now(timezone.utc)
    nodeid = "tests/test_x.py::test_slowpoke"
    store.quarantine_add(
        QuarantineRow(
            nodeid,
            "hangs on CI",
            now - timedelta(days=14),
            owner="@bob",
            expires_at=now - timedelta(hours=1),
        )
    )

    def queued() -> list[str]:
        return [r.fingerprint for r in store.outbox_rows() if r.fingerprint.startswith("quar")]

    first = schedctl(config_path, "run", "hourly", "--json")
    assert first.returncode == 0, first.stderr
    assert f"quarantine of {nodeid} expired: alert queued for @bob" in first.stderr
    assert len(queued()) == 1
    (row,) = store.quarantine_list()
    assert row.expiry_alerted_at is not None
    second = schedctl(config_path, "run", "hourly", "--json")
    assert second.returncode == 0 and "quarantine of" not in second.stderr
    assert QuarantineExpiry(store, []).check() == []  # the daemon's listener: already claimed
    assert len(queued()) == 1


NOT_FOR_A_PLAIN_RUN = (
    "requests",
    "http.client",
    "docker",
    "scheduler.alerts",
    "scheduler.api.client",
    "scheduler.cli.progress",
)
"""What `schedctl run --json` without alert sinks, a daemon or the docker runner never needs."""


def test_a_plain_json_run_imports_no_alerting_daemon_client_or_progress_bar(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The run path stays lean: alerting only with sinks (for the quarantine-expiry check), the
    daemon's HTTP client only when a daemon holds the state dir, the progress bar only without
    --json. A fresh interpreter runs the command and reports its sys.modules."""
    config = write_config()
    code = (
        "import json, sys\n"
        "from scheduler.cli import _run\n"
        f"code = _run(['--config', {str(config)!r}, 'run', 'hourly', '--json'])\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    loaded = set(report["modules"])
    assert {"scheduler.run.dispatch", "runners.local"} <= loaded  # the probe sees the run
    assert not loaded & set(NOT_FOR_A_PLAIN_RUN), sorted(loaded & set(NOT_FOR_A_PLAIN_RUN))
