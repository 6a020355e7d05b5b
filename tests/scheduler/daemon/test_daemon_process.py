"""The daemon as a real process: CLI through it, kill -9 and restart, missed slots, sd_notify,
graceful stop, and the systemd unit.

Scheduled slots use tests/scheduler/daemon/harness.py (the same daemon with a seconds-level
trigger), so restart behaviour is checked in seconds rather than cron minutes. Every wait is on
the condition the assertion needs (a row, a pid, a datagram), never on a sleep.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runners.local import LocalRunner
from runners.registry import instance_of
from scheduler.api import ApiClient
from scheduler.config import load_config
from scheduler.daemon.lock import StateLock
from scheduler.store.engine import RunRecord, Store
from tests.conftest import ROOT, SCHEDCTL, tier
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

PROJECT_TESTS = """
import os, time, pytest

@pytest.mark.hourly
def test_quick():
    assert True

@pytest.mark.sleepy
def test_sleeps():
    time.sleep(float(os.environ.get("SLEEP_S", "60")))
"""
PYTEST_INI = "[pytest]\nmarkers =\n    hourly: quick\n    sleepy: sleeps\n"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    out["PYTHONPATH"] = str(ROOT)
    return out


class Daemons:
    """Starts daemon processes for one test and makes sure none outlives it."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.state = load_config(config).state_dir
        self.procs: list[subprocess.Popen[str]] = []
        self.events = config.parent / "events.jsonl"

    def start(
        self, *, every_s: int | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        if every_s is None:
            argv = [*SCHEDCTL, "--config", str(self.config), "daemon", "--log-format", "json"]
        else:
            argv = [sys.executable, "-m", "tests.scheduler.daemon.harness", str(self.config)]
            argv += [str(every_s), str(self.events)]
        log = (self.config.parent / f"daemon{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**env(), **(extra_env or {})}, stdout=log, stderr=log, text=True
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[str], timeout: float = 30) -> None:
        sock = self.state / "api.sock"

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}: {self.log(proc)}")
            return StateLock.holder(self.state) == proc.pid and sock.exists()

        wait_for(ready, timeout, f"daemon pid {proc.pid} to hold the lock and its socket")
        ApiClient(unix=sock, timeout=10).status()

    def log(self, proc: subprocess.Popen[str]) -> str:
        index = self.procs.index(proc)
        return (self.config.parent / f"daemon{index}.log").read_text()[-3000:]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SCHEDCTL, "--config", str(self.config), *args],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def store(self) -> Store:
        return Store(self.state / "schedctl.db")

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        lines = [json.loads(x) for x in self.events.read_text().splitlines() if x.strip()]
        return [e for e in lines if e["event"] == kind]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.local_runs().reap_orphans(set())

    def local_runs(self) -> LocalRunner:
        """A local runner of the daemons' instance: it sees (and reaps) their runs' processes."""
        return LocalRunner(instance=instance_of(self.state))


@pytest.fixture
def daemons(tmp_path: Path, write_config: Callable[..., Path]) -> Iterator[Daemons]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_things.py").write_text(PROJECT_TESTS)
    (project / "pytest.ini").write_text(PYTEST_INI)
    config = write_config(
        project=project,
        tiers={
            "hourly": tier(markers="hourly", misfire_grace=1),
            "slow": tier(schedule=None, markers="sleepy", timeout=120),
        },
        daemon={"metrics_address": None, "web_address": None, "grace": 2},
    )
    d = Daemons(config)
    yield d
    d.close()


def slot_rows(store: Store, tier_name: str) -> list[RunRecord]:
    return [r for r in store.list_runs(tier=tier_name, limit=1000) if r.slot is not None]


def test_cli_run_goes_through_the_daemon(daemons: Daemons) -> None:
    """`schedctl run hourly --json` runs in the daemon (trigger manual) and shows in `runs`."""
    proc = daemons.start()
    daemons.wait_ready(proc)
    result = daemons.cli("run", "hourly", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert f"submitted to daemon pid {proc.pid} as run {summary['run_id']}" in result.stderr
    assert summary["outcome"] == "passed" and summary["trigger"] == "manual"
    assert summary["counts"]["passed"] == 1
    record = daemons.store().get_run(summary["run_id"])
    assert record.owner_pid == proc.pid
    listed = json.loads(daemons.cli("runs", "--json").stdout)
    assert [(r["id"], r["trigger"]) for r in listed] == [(summary["run_id"], "manual")]
    status = json.loads(daemons.cli("status", "--json").stdout)
    assert status["daemon"]["pid"] == proc.pid and status["daemon"]["reachable"] is True
    bad = daemons.cli("run", "hourly", "--ref", "no-such-ref", "--json")
    assert bad.returncode in (1, 2)


def test_second_daemon_refuses_to_start(daemons: Daemons) -> None:
    """A second daemon on the same state dir exits 1 naming the pid that holds it."""
    first = daemons.start()
    daemons.wait_ready(first)
    second = daemons.start()
    assert second.wait(30) == 1
    assert f"another schedctl daemon (pid {first.pid})" in daemons.log(second)
    assert first.poll() is None


def test_cancel_without_daemon_is_an_error(daemons: Daemons) -> None:
    """`schedctl cancel` with no daemon exits 1 and says that no daemon runs."""
    result = daemons.cli("cancel", "1")
    assert result.returncode == 1 and "no schedctl daemon runs" in result.stderr


def test_kill9_mid_run_then_restart(daemons: Daemons) -> None:
    """kill -9 mid-run: restart marks the run interrupted, kills its processes, keeps firing."""
    proc = daemons.start(every_s=3)
    daemons.wait_ready(proc)
    submitted = daemons.cli("run", "slow", "--detach")
    assert submitted.returncode == 0, submitted.stderr
    run_id = int(submitted.stdout.strip())
    local = daemons.local_runs()
    pids = wait_for(lambda: local.run_pids(str(run_id)), 30, "the run's pytest process")
    proc.kill()
    proc.wait(10)
    assert all(Path(f"/proc/{pid}").exists() for pid in pids), "nothing should have killed them"

    restarted_at = datetime.now(timezone.utc)
    again = daemons.start(every_s=3)
    daemons.wait_ready(again)
    store = daemons.store()
    record = store.get_run(run_id)
    assert record.outcome.value == "interrupted" and str(proc.pid) in record.reason
    assert local.run_pids(str(run_id)) == set()

    def fired_after_restart() -> bool:
        return any(
            r.trigger == "schedule" and r.outcome.value == "passed" and r.slot > restarted_at
            for r in slot_rows(store, "hourly")
        )

    wait_for(fired_after_restart, 20, "a scheduled run after the restart")
    rows = slot_rows(store, "hourly")
    assert len({r.slot for r in rows}) == len(rows)
    assert all(r.slot.microsecond == 0 for r in rows)


def test_slots_missed_while_down_are_recorded_and_alerted(daemons: Daemons) -> None:
    """Slots that passed beyond the grace while the daemon was down become missed rows + events.

    The harness fires every 2 s with a misfire grace of 1 s. Every slot after the last one the
    first daemon recorded that was more than the grace old when the second one started must
    become a missed row: the test waits for exactly those rows (not for the first one), and
    keeps the daemon down until the clock says at least two such slots exist, however slowly
    the machine stops and starts daemons.
    """
    every, grace = timedelta(seconds=2), timedelta(seconds=1)
    proc = daemons.start(every_s=2)
    daemons.wait_ready(proc)
    store = daemons.store()
    wait_for(lambda: slot_rows(store, "hourly"), 30, "a first scheduled run")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    last = max(r.slot for r in slot_rows(store, "hourly"))
    wait_for(
        lambda: datetime.now(timezone.utc) > last + 2 * every + grace,
        30,
        f"two slots after {last} to fall beyond the grace",
    )

    restarted_at = datetime.now(timezone.utc)
    again = daemons.start(every_s=2)
    daemons.wait_ready(again)
    implied: list[datetime] = []  # the slots that were beyond the grace at the restart
    while last + (len(implied) + 1) * every + grace < restarted_at:
        implied.append(last + (len(implied) + 1) * every)
    assert len(implied) >= 2

    def missed() -> list[RunRecord]:
        return [r for r in slot_rows(store, "hourly") if r.outcome.value == "missed"]

    wait_for(
        lambda: set(implied) <= {r.slot for r in missed()},
        30,
        f"{len(implied)} missed rows, for the slots {[s.isoformat() for s in implied]}",
    )

    def run_after_restart() -> list[RunRecord]:
        rows = slot_rows(store, "hourly")
        return [r for r in rows if r.slot >= restarted_at and r.outcome.value != "missed"]

    wait_for(run_after_restart, 30, "a slot run by the restarted daemon")
    missed_ids = {r.id for r in missed()}
    wait_for(
        lambda: missed_ids <= {e["run_id"] for e in daemons.events_of("SlotMissed")},
        30,
        f"a SlotMissed event for each of the runs {sorted(missed_ids)}",
    )
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0

    slots = sorted(r.slot for r in slot_rows(store, "hourly"))
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    assert gaps == {2.0}, f"every 2 s slot has exactly one row: {slots}"


def test_sd_notify_and_graceful_stop(daemons: Daemons, tmp_path: Path) -> None:
    """READY=1 and WATCHDOG=1 reach NOTIFY_SOCKET; SIGTERM sends STOPPING=1 and records the run."""
    address = f"/tmp/schedctl-notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(1.0)
    try:
        proc = daemons.start(extra_env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        messages: list[str] = []

        def received(needle: str) -> bool:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
            return any(needle in m for m in messages)

        wait_for(lambda: received("READY=1"), 30, f"READY=1 in {messages}")
        wait_for(lambda: received("WATCHDOG=1"), 5, f"WATCHDOG=1 in {messages}")
        daemons.wait_ready(proc)
        run_id = int(daemons.cli("run", "slow", "--detach").stdout.strip())
        local = daemons.local_runs()
        wait_for(lambda: local.run_pids(str(run_id)), 30, "the run")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: received("STOPPING=1"), 5, f"STOPPING=1 in {messages}")
        assert proc.wait(30) == 0
        assert time.monotonic() - started < 2 + 15
    finally:
        listener.close()
        os.unlink(address)
    record = daemons.store().get_run(run_id)
    assert record.outcome.value == "cancelled"
    assert record.reason == "daemon stopped: grace period ran out"
    assert daemons.local_runs().run_pids(str(run_id)) == set()
    assert not (daemons.state / "api.sock").exists()


UNIT = ROOT / "deploy" / "systemd" / "schedctl.service"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this interpreter)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    unit = tmp_path / "schedctl.service"
    unit.write_text(
        text.replace(
            "ExecStart=/opt/schedctl/bin/schedctl", f"ExecStart={sys.executable} -m scheduler"
        )
    )
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_unit_security_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit 2.0 or better, and it bounds descriptors."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    text = UNIT.read_text()
    assert "\nLimitNOFILE=" in text
    unit = tmp_path / "schedctl.service"
    unit.write_text(
        text.replace(
            "ExecStart=/opt/schedctl/bin/schedctl", f"ExecStart={sys.executable} -m scheduler"
        )
    )
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout[-3000:]
