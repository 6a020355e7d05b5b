"""Outcomes a new user can trust, with the real local runner and real interpreters.

Each case was wrong before the one outcome function: a set-up problem reported as ``failed``, a
tier's PYTHONPATH that hid the results plugin, a conftest import error reported as "usage error",
``runner: auto`` silently ignoring ``project.python``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.fake import FakeRunner
from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.config import Config, config_from_mapping
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from scheduler.store import Store
from tests.conftest import tier


def project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def local_dispatcher(config: Config, **instances: object) -> Dispatcher:
    factory = RunnerFactory({"local": LocalRunner(), **instances})  # type: ignore[dict-item]
    return Dispatcher(config, Store(config.db_path), factory)


def with_python(
    tmp_path: Path, root: Path, python: str, runner: str = "local", tier_runner: str | None = None
) -> Config:
    tier_kw = {"runner": tier_runner} if tier_runner else {}
    data = {
        "state_dir": str(tmp_path / "state"),
        "runner": runner,
        "local": {"allow_root": True},  # not the nobody default: tmp dirs are 0700
        "project": {"path": str(root), "python": python},
        "tiers": {"hourly": tier(markers=None, **tier_kw)},
    }
    return config_from_mapping(data, source=str(tmp_path / "config.yaml"), base_dir=tmp_path)


PASSING = {"tests/test_ok.py": "def test_ok():\n    assert True\n"}


def test_interpreter_without_pytest_is_infra_error_not_failed(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    config = with_python(tmp_path, project(tmp_path / "p", PASSING), str(python))
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.INFRA_ERROR
    assert record.reason == f"pytest is not importable by {python}: No module named pytest"


def test_tier_pythonpath_is_joined_with_the_plugin_path(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    root = project(
        tmp_path / "p",
        {
            "src/mypkg/__init__.py": "VALUE = 3\n",
            "tests/test_pkg.py": "import mypkg\n\ndef test_value():\n    assert mypkg.VALUE == 3\n",
        },
    )
    config = make_config(
        project=root,
        tiers={"hourly": tier(markers=None, env={"PYTHONPATH": str(root / "src")})},
    )
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert (record.outcome, record.counts["passed"]) == (Outcome.PASSED, 1), record.reason


def test_conftest_import_error_names_the_missing_module(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    root = project(
        tmp_path / "p", {**PASSING, "tests/conftest.py": "import not_installed_dep_xyz\n"}
    )
    config = make_config(project=root, tiers={"hourly": tier(markers=None)})
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.ERROR
    assert "while loading conftest" in record.reason
    assert "No module named 'not_installed_dep_xyz'" in record.reason


def test_test_that_exits_the_interpreter_is_not_passed(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    root = project(
        tmp_path / "p",
        {"tests/test_exit.py": "import os\n\ndef test_bye():\n    os._exit(0)\n"},
    )
    config = make_config(project=root, tiers={"hourly": tier(markers=None)})
    record = local_dispatcher(config).run(RunRequest("hourly"))
    assert record.outcome is Outcome.ERROR
    assert "while running tests/test_exit.py::test_bye" in record.reason


@pytest.mark.parametrize("runner", ["auto", None])
def test_auto_runner_with_project_python_runs_locally(
    tmp_path: Path, make_config: Callable[..., Config], runner: str | None
) -> None:
    """``project.python`` is a host path: ``auto`` must not put the run in a container."""
    root = project(tmp_path / "p", PASSING)
    config = with_python(tmp_path, root, sys.executable, runner="auto", tier_runner=runner)
    docker = FakeRunner()
    record = local_dispatcher(config, docker=docker, auto=docker).run(RunRequest("hourly"))
    assert (record.outcome, record.runner) == (Outcome.PASSED, "local"), record.reason
    assert docker.specs == []
    assert record.argv[0] == sys.executable
