"""Launch plans remembered between runs (scheduler/run/launch_plans.py): same input, same plan;
any change to what the plan is made of, or a file others could write, and nothing is recalled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runners.prewarm import Plan
from scheduler.run.launch_plans import recall, remember

PLAN = Plan(python="/usr/bin/python3", env={"PATH": "/usr/bin", "X": "1"}, instance="abc")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SCHEDCTL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin", "HOME": "/root"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("tiers: {}\n")
    return path


def test_a_plan_is_recalled_for_the_same_input(config: Path, env: dict[str, str]) -> None:
    assert recall(config, "hourly", None, env) is None
    remember(config, "hourly", None, PLAN, env)
    assert recall(config, "hourly", None, env) == PLAN
    assert recall(config, "daily", None, env) is None
    assert recall(config, "hourly", "local", env) is None
    plans = next(Path(env["SCHEDCTL_CACHE_DIR"]).glob("launch-*.json"))
    assert oct(plans.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("change", ["config", "PATH", "LANG"])
def test_a_change_of_what_the_plan_is_made_of_forgets_it(
    config: Path, env: dict[str, str], change: str
) -> None:
    remember(config, "hourly", None, PLAN, env)
    if change == "config":
        config.write_text("tiers: {}\n# edited\n")
    else:
        env[change] = "/elsewhere"
    assert recall(config, "hourly", None, env) is None


def test_a_plans_file_others_can_write_is_not_read(config: Path, env: dict[str, str]) -> None:
    remember(config, "hourly", None, PLAN, env)
    plans = next(Path(env["SCHEDCTL_CACHE_DIR"]).glob("launch-*.json"))
    plans.chmod(0o622)
    assert recall(config, "hourly", None, env) is None
    plans.chmod(0o600)
    assert recall(config, "hourly", None, env) == PLAN
    Path(env["SCHEDCTL_CACHE_DIR"]).chmod(0o777)
    assert recall(config, "hourly", None, env) is None


@pytest.mark.parametrize(
    "content", ["not json", "[]", '{"hourly|": {"key": "x"}}', '{"hourly|": 3}']
)
def test_a_damaged_plans_file_recalls_nothing(
    config: Path, env: dict[str, str], content: str
) -> None:
    remember(config, "hourly", None, PLAN, env)
    plans = next(Path(env["SCHEDCTL_CACHE_DIR"]).glob("launch-*.json"))
    plans.write_text(content)
    assert recall(config, "hourly", None, env) is None
    remember(config, "hourly", None, PLAN, env)
    assert recall(config, "hourly", None, env) == PLAN


def test_a_plan_with_a_foreign_field_is_refused(config: Path, env: dict[str, str]) -> None:
    bad = Plan(python="/usr/bin/python3", env={}, instance="abc", user={"preexec_fn": "x"})
    remember(config, "hourly", None, bad, env)
    assert recall(config, "hourly", None, env) is None


def test_without_a_cache_dir_nothing_is_kept(config: Path) -> None:
    remember(config, "hourly", None, PLAN, {})
    assert recall(config, "hourly", None, {}) is None
    assert os.listdir(config.parent) == ["config.yaml"]
