"""``schedctl config check``: per tier, the runner and the interpreter a run will use."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runners import registry
from scheduler.cli import cli

PYTHON = "/opt/venv/bin/python"


def check(config: Path) -> Result:
    return CliRunner().invoke(cli, ["config", "check", str(config)])


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool, str], list[int]]:
    """Replace the Docker probe with an answer; the returned list counts the calls."""

    def install(ok: bool, reason: str) -> list[int]:
        calls: list[int] = []

        def probe() -> tuple[bool, str]:
            calls.append(1)
            return ok, reason

        monkeypatch.setattr(registry, "docker_probe", probe)
        return calls

    return install


def tier_line(result: Result, name: str) -> str:
    found = [x.strip() for x in result.stdout.splitlines() if x.strip().startswith(f"{name} ")]
    assert len(found) == 1, result.output
    return found[0]


def test_auto_with_project_python_runs_locally(
    write_config: Callable[..., Path], tmp_path: Path, probes: Callable[[bool, str], list[int]]
) -> None:
    """runner: auto + project.python: local with that python, and Docker is not even probed."""
    calls = probes(True, "docker engine 27.0 at unix:///x")
    config = write_config(
        project={"path": str(tmp_path), "python": PYTHON},
        runner="auto",
        tiers={"hourly": {}, "daily": {"runner": "auto"}},
    )
    result = check(config)
    assert result.exit_code == 0, result.output
    for name in ("hourly", "daily"):
        line = tier_line(result, name)
        assert "runner=local (auto: project.python is set" in line
        assert line.endswith(f"python={PYTHON}")
    assert calls == [] and result.stderr == ""


def test_auto_probes_docker_once(
    write_config: Callable[..., Path], probes: Callable[[bool, str], list[int]]
) -> None:
    """Without project.python, auto uses Docker when the engine answers: the image's python3."""
    calls = probes(True, "docker engine 27.0 at unix:///x")
    config = write_config(runner="auto", image="img:7", tiers={"hourly": {}, "daily": {}})
    result = check(config)
    assert result.exit_code == 0, result.output
    engine = "(auto: docker engine 27.0 at unix:///x)"
    assert (
        tier_line(result, "hourly")
        == f"hourly  runner=docker {engine}  python=python3 in image img:7"
    )
    assert calls == [1]


def test_auto_without_docker_falls_back_to_local(
    write_config: Callable[..., Path], probes: Callable[[bool, str], list[int]]
) -> None:
    """No engine: auto says why it runs locally, with schedctl's own interpreter."""
    probes(False, "cannot connect to unix:///x")
    result = check(write_config(runner="auto"))
    assert result.exit_code == 0, result.output
    line = tier_line(result, "hourly")
    assert "runner=local (auto: no Docker engine: cannot connect to unix:///x)" in line
    assert line.endswith(f"python={sys.executable} (schedctl's own)")


def test_docker_with_project_python_warns(
    write_config: Callable[..., Path], tmp_path: Path, probes: Callable[[bool, str], list[int]]
) -> None:
    """An explicit docker tier ignores project.python: exit 0, but say so."""
    calls = probes(True, "unused")
    config = write_config(
        project={"path": str(tmp_path), "python": PYTHON},
        tiers={"hourly": {}, "gpu": {"runner": "docker", "image": "cuda:12"}},
    )
    result = check(config)
    assert result.exit_code == 0, result.output
    assert tier_line(result, "hourly") == f"hourly  runner=local  python={PYTHON}"
    assert tier_line(result, "gpu") == "gpu     runner=docker  python=python3 in image cuda:12"
    assert "warning: tier gpu: runner: docker" in result.stderr
    assert f"project.python ({PYTHON}) is ignored" in result.stderr
    assert "hourly" not in result.stderr and calls == []
