"""Exact commits through the CLI, on real git repositories made in the test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SCHEDCTL, tier
from tests.schedctl import run_json, schedctl
from tests.scheduler.source.conftest import git

pytestmark = pytest.mark.slow

PYTEST_INI = "[pytest]\nmarkers =\n    hourly: hourly\n"


def commit(repo: Path, body: str, subject: str) -> str:
    (repo / "test_calc.py").write_text(
        f"import pytest\n\n@pytest.mark.hourly\ndef test_add():\n    {body}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "upstream"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "pytest.ini").write_text(PYTEST_INI)
    return path


def test_breaking_commit_is_tested_and_named(write_config: Callable[..., Path], repo: Path) -> None:
    """A green, then B breaks a test: the run tests B, records its SHA, show lists B."""
    sha_a = commit(repo, "assert 1 + 1 == 2", "Add the adder")
    config = write_config(project={"repo": str(repo)}, tiers={"hourly": tier()})
    code, green = run_json(config, "hourly")
    assert (code, green["outcome"], green["sha"]) == (0, "passed", sha_a)
    sha_b = commit(repo, "assert 1 + 1 == 3", "Break the adder")
    code, red = run_json(config, "hourly")
    assert (code, red["outcome"], red["sha"]) == (1, "failed", sha_b)
    shown = json.loads(schedctl(config, "show", str(red["run_id"]), "--json").stdout)
    assert shown["last_green_run_id"] == green["run_id"]
    assert [line.split(" ", 1)[1] for line in shown["changes_since_green"]] == ["Break the adder"]
    assert shown["source"]["subject"] == "Break the adder"
    text = schedctl(config, "show", str(red["run_id"])).stdout
    assert "changes since last green run" in text and "Break the adder" in text


def test_ref_tests_an_older_commit(write_config: Callable[..., Path], repo: Path) -> None:
    """--ref A tests A while main is at a breaking B; two tiers on different SHAs at once."""
    sha_a = commit(repo, "assert 1 + 1 == 2", "Add the adder")
    commit(repo, "assert 1 + 1 == 3", "Break the adder")
    config = write_config(
        project={"repo": str(repo)}, tiers={"hourly": tier(), "daily": tier(schedule="30 2 * * *")}
    )
    procs = {
        "a": subprocess.Popen(
            [*SCHEDCTL, "--config", str(config), "run", "hourly", "--ref", sha_a[:10], "--json"],
            stdout=subprocess.PIPE,
            text=True,
        ),
        "main": subprocess.Popen(
            [*SCHEDCTL, "--config", str(config), "run", "daily", "--json"],
            stdout=subprocess.PIPE,
            text=True,
        ),
    }
    results = {name: json.loads(p.communicate(timeout=180)[0]) for name, p in procs.items()}
    assert (results["a"]["outcome"], results["a"]["sha"]) == ("passed", sha_a)
    assert results["main"]["outcome"] == "failed"


def test_unknown_ref_and_unreachable_repo(
    write_config: Callable[..., Path], repo: Path, tmp_path: Path
) -> None:
    """An unknown ref exits 2 naming it; a repo that cannot be fetched is infra-error naming it."""
    commit(repo, "assert True", "Start")
    config = write_config(project={"repo": str(repo)})
    proc = schedctl(config, "run", "hourly", "--ref", "no-such-branch")
    assert proc.returncode == 2 and "no-such-branch" in proc.stderr
    assert json.loads(schedctl(config, "runs", "--json").stdout) == []
    nowhere = tmp_path / "nowhere.git"
    config = write_config(project={"repo": str(nowhere)})
    code, result = run_json(config, "hourly")
    assert (code, result["outcome"]) == (1, "infra-error")
    assert str(nowhere) in result["reason"]
