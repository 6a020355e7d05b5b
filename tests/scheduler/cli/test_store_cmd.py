"""``store: postgresql://...`` from the command line: a refused login or an unreachable host is
exit 2 with one line; ``schedctl store migrate|copy``; a run recorded in PostgreSQL with its host.

Real processes (``python -m scheduler``) against the session's throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import Store, TestResultRow
from tests.conftest import SCHEDCTL, tier
from tests.pg import PgCluster

ROOT = Path(__file__).resolve().parents[3]


def schedctl(
    config: Path, *args: str, password: str | None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SCHEDCTL_STORE_PASSWORD"}
    env["PYTHONPATH"] = str(ROOT)
    if password is not None:
        env["SCHEDCTL_STORE_PASSWORD"] = password
    return subprocess.run(
        [*SCHEDCTL, "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=config.parent, check=False,
    )  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "infra-error" not in done.stderr + done.stdout
    return lines[0]


def test_a_wrong_password_is_exit_2_for_config_check_and_run(
    write_config: Callable[..., Path], pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    config = write_config(store=pg_url)
    for args in (("config", "check"), ("run", "hourly")):
        done = schedctl(config, *args, password="wrong-secret-42")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        line = one_error_line(done)
        assert line.startswith(f"error: store {pg_url}: cannot connect:"), line
        assert "password authentication failed" in line
        assert "wrong-secret-42" not in done.stderr + done.stdout
    assert not (tmp_path / "state").exists()  # nothing written elsewhere


def test_an_unreachable_host_is_exit_2_for_config_check_and_run(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(store="postgresql://schedctl@127.0.0.1:1/schedctl")
    for args in (("config", "check"), ("run", "hourly")):
        done = schedctl(config, *args, password="x")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        line = one_error_line(done)
        assert "cannot connect" in line and "127.0.0.1" in line, line
    assert not (tmp_path / "state").exists()


def test_migrate_then_run_records_the_host(
    write_config: Callable[..., Path], pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = pg_cluster.create_database(empty=True)
    try:
        config = write_config(store=url, host="gpu-a", tiers={"hourly": tier(timeout=120)})
        done = schedctl(config, "config", "check", password=pg_cluster.password)
        assert done.returncode == 1 and "run `schedctl store migrate` first" in done.stderr
        done = schedctl(config, "store", "migrate", password=pg_cluster.password)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("-> 5") or "(none) ->" in done.stdout
        done = schedctl(config, "store", "migrate", password=pg_cluster.password)
        assert "up to date" in done.stdout
        done = schedctl(config, "config", "check", password=pg_cluster.password)
        assert done.returncode == 0, done.stderr
        assert f"store: {url}" in done.stdout and "host gpu-a" in done.stdout
        done = schedctl(config, "run", "hourly", "--json", password=pg_cluster.password)
        assert done.returncode == 0, done.stdout + done.stderr
        done = schedctl(config, "runs", "--json", password=pg_cluster.password)
        (run,) = json.loads(done.stdout)
        assert (run["host"], run["outcome"]) == ("gpu-a", "passed")
        done = schedctl(config, "runs", password=pg_cluster.password)
        assert "gpu-a" in done.stdout
        done = schedctl(config, "show", str(run["id"]), password=pg_cluster.password)
        assert "host" in done.stdout and "gpu-a" in done.stdout
        shown = schedctl(config, "show", str(run["id"]), "--json", password=pg_cluster.password)
        nodeid = json.loads(shown.stdout)["tests"][0]["nodeid"]
        done = schedctl(config, "test", nodeid, "--json", password=pg_cluster.password)
        assert done.returncode == 0, done.stderr
        assert [a["host"] for a in json.loads(done.stdout)["attempts"]] == ["gpu-a"]
    finally:
        pg_cluster.drop_database(url)


def test_store_copy_moves_a_box_in(
    write_config: Callable[..., Path], pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    box = Store(tmp_path / "box.db")
    run_id = box.create_run(tier="hourly", trigger="manual", host="old-box")
    assert run_id is not None
    box.finish_run(
        run_id,
        [TestResultRow(nodeid="t::a", outcome="passed", duration_s=1.0, markers="")],
        outcome=Outcome.PASSED,
        finished_at=datetime(2026, 3, 1, tzinfo=timezone.utc),
    )
    config = write_config(store=pg_url)
    done = schedctl(
        config, "store", "copy", "--from", f"sqlite:///{tmp_path / 'box.db'}", "--json",
        password=pg_cluster.password,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"]["runs"] == 1 and report["rows"]["test_results"] == 1
    assert pg_cluster.password not in done.stdout
    done = schedctl(config, "runs", "--json", password=pg_cluster.password)
    assert [(r["host"], r["outcome"]) for r in json.loads(done.stdout)] == [("old-box", "passed")]
    missing = schedctl(
        config, "store", "copy", "--from", f"sqlite:///{tmp_path / 'nope.db'}",
        password=pg_cluster.password,
    )  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
