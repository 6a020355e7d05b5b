"""Containers run as an id no host account has (issue 20, finding 8: run dirs were handed to
host uid 1000, a real person on many hosts)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from runners.docker import CONTAINER_UID, DockerRunner
from runners.registry import RunnerFactory
from scheduler.config import Config, load_config
from scheduler.daemon.assembly import build_dispatcher
from scheduler.kernel.errors import ConfigError
from scheduler.store.engine import Store
from tests.conftest import SUITE

pytest_plugins = ["tests.runners.conftest_docker"]

WHO = """
import os

def test_who():
    open("/work/out/who", "w").write(f"{os.getuid()}:{os.getgid()}:{os.getgroups()}")
"""


def _config(tmp_path: Path, **docker: Any) -> Path:
    data = {
        "state_dir": "state",
        "project": {"path": str(SUITE)},
        "tiers": {"hourly": {"schedule": "15 * * * *", "timeout": 60}},
        "docker": docker,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_default_container_id_is_no_host_account() -> None:
    """64000 has no passwd entry here (the config check below would refuse it otherwise)."""
    with pytest.raises(KeyError):
        pwd.getpwuid(CONTAINER_UID)


@pytest.mark.parametrize(
    ("docker", "match"),
    [
        ({"uid": 65534}, r"docker\.uid.*host account 'nobody'"),
        ({"uid": 0}, r"docker\.uid"),
        ({"gid": 65534}, r"docker\.gid.*host group 'nogroup'"),
    ],
)
def test_host_ids_are_refused_at_load(tmp_path: Path, docker: Any, match: str) -> None:
    """A uid/gid that names a host account or group: a config error naming the key."""
    with pytest.raises(ConfigError, match=match):
        load_config(_config(tmp_path, **docker))


def test_the_configured_ids_reach_the_docker_runner(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """docker.uid/gid -> the runner the daemon's dispatcher builds."""
    config = make_config(docker={"uid": 64123, "gid": 64124})
    factory = build_dispatcher(config, Store(config.db_path)).runners
    assert isinstance(factory, RunnerFactory)
    runner = factory.get("docker")
    assert isinstance(runner, DockerRunner) and runner.user == "64123:64124"


@pytest.mark.docker
def test_container_runs_as_the_foreign_id_and_writes_its_run_dir(
    docker_runner: DockerRunner, make_project: Any, make_spec: Any
) -> None:
    """Real engine, real image (whose passwd has no such entry): the test process is
    64000:64000 in no other group, it can write /work/out, and on the host only the run dir
    itself was handed to 64000 (its parent stays the daemon's)."""
    spec = make_spec(make_project({"test_who.py": WHO}))
    result = docker_runner.run(spec)
    assert result.exit_code == 0, spec.log_path.read_text(errors="replace")
    assert (
        spec.run_dir / "who"
    ).read_text() == f"{CONTAINER_UID}:{CONTAINER_UID}:[{CONTAINER_UID}]"
    assert (spec.run_dir / "who").stat().st_uid == CONTAINER_UID
    if os.geteuid() == 0:
        assert spec.run_dir.stat().st_uid == CONTAINER_UID
        assert spec.run_dir.parent.stat().st_uid == 0
