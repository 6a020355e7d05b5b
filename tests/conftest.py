"""Shared fixtures: configs in tmp dirs, real stores, engine requirements under CI."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from scheduler.config import Config, config_from_mapping
from scheduler.store.engine import Store
from tests.pg import PgCluster, PgUnavailable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SUITE = EXAMPLES / "suite"
FIXTURES = EXAMPLES / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip on a developer machine, fail under CI=true: CI must have every engine."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True, scope="session")
def _config_snapshots_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Read-only commands keep config snapshots (scheduler.config_cache): not in ~/.cache."""
    saved = os.environ.get("SCHEDCTL_CACHE_DIR")
    os.environ["SCHEDCTL_CACHE_DIR"] = str(tmp_path_factory.mktemp("config-cache"))
    yield
    if saved is None:
        os.environ.pop("SCHEDCTL_CACHE_DIR", None)
    else:
        os.environ["SCHEDCTL_CACHE_DIR"] = saved


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def quiet_hourly(now: datetime) -> tuple[str, datetime]:
    """An hourly cron expression whose minute is half an hour from ``now``, and its latest slot
    (29-31 minutes ago): no slot of it falls due while a test started at ``now`` runs, where a
    fixed ``15 * * * *`` would when the test runs at hh:15."""
    minute = (now.minute + 30) % 60
    latest = now.replace(minute=minute, second=0, microsecond=0)
    if latest > now:
        latest -= timedelta(hours=1)
    return f"{minute} * * * *", latest


def tier(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"schedule": "15 * * * *", "timeout": 60, "markers": "hourly"}
    base.update(overrides)
    return base


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a validated Config whose state lives in tmp_path."""

    def make(
        project: Path | None = None, tiers: dict[str, Any] | None = None, **top: Any
    ) -> Config:
        data: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "project": {"path": str(project or SUITE)},
            "tiers": tiers or {"hourly": tier()},
            # pytest's tmp dirs (0700) and the venv may be unreachable for nobody, the default
            # local.user of a root daemon: tests opt out unless they test that default.
            "local": {"allow_root": True},
        }
        data.update(top)
        return config_from_mapping(data, source=str(tmp_path / "config.yaml"), base_dir=tmp_path)

    return make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config.yaml into tmp_path and return its path."""

    def write(
        project: Path | dict[str, Any] | None = None,
        tiers: dict[str, Any] | None = None,
        **top: Any,
    ) -> Path:
        data: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "runner": "local",
            "project": project if isinstance(project, dict) else {"path": str(project or SUITE)},
            "tiers": tiers or {"hourly": tier()},
            # pytest's tmp dirs (0700) and the venv may be unreachable for nobody, the default
            # local.user of a root daemon: tests opt out unless they test that default.
            "local": {"allow_root": True},
        }
        data.update(top)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "schedctl.db")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the session (skipped locally, FAILS under CI=true
    when PostgreSQL is missing or does not start)."""
    try:
        cluster = PgCluster.launch()
    except PgUnavailable as exc:
        require(False, f"no PostgreSQL server: {exc}")
        raise AssertionError("unreachable") from None
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own; its URL (password: PGPASSWORD-free,
    pass ``pg_cluster.password``)."""
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture
def pg_store(pg_cluster: PgCluster, pg_url: str) -> Iterator[Store]:
    store = Store(pg_url, password=pg_cluster.password)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def fixture_project(tmp_path: Path) -> Callable[[str], Path]:
    """Copy one of examples/fixtures/<name> into tmp_path and return it."""

    def copy(name: str) -> Path:
        target = tmp_path / "projects" / name
        shutil.copytree(FIXTURES / name, target)
        return target

    return copy


SCHEDCTL = [sys.executable, "-m", "scheduler"]
