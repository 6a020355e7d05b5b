"""Config snapshots for read-only commands: used only for the same input, never from others."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.config import Config, load_config
from scheduler.config_cache import (
    CACHE_ENV,
    host_agrees,
    load_config_cached,
    load_snapshot,
    load_view,
)
from scheduler.config_view import ConfigView, view_from_yaml
from scheduler.kernel.errors import ConfigError
from tests.fresh import python_c
from tests.waiting import wait_for

CONFIG = """\
state_dir: {state}
project:
  path: {project}
timezone: ${{TZ_FOR_TEST:-UTC}}
tiers:
  hourly:
    schedule: "15 * * * *"
    timeout: 30m
    markers: hourly
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state", project=tmp_path))
    cache = tmp_path / "cache"
    return config, {CACHE_ENV: str(cache)}, cache


def _snapshot(cache: Path) -> Path:
    (found,) = cache.glob("config-*.pickle")
    return found


def _tamper(snapshot: Path, timezone: str) -> None:
    """Keep the snapshot's key, change the config and view inside: shows which one a load
    returns."""
    payload = pickle.loads(snapshot.read_bytes())
    config = pickle.loads(payload["config"]).model_copy(update={"timezone": timezone})
    payload["config"] = pickle.dumps(config)
    payload["view"] = replace(payload["view"], timezone=timezone)
    snapshot.write_bytes(pickle.dumps(payload))


def test_a_snapshot_is_written_private_and_used_for_the_same_input(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    first = load_config_cached(config, env)
    assert first == load_config(config, env)
    snapshot = _snapshot(cache)
    assert snapshot.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700
    _tamper(snapshot, "Europe/Paris")
    assert load_config_cached(config, env).timezone == "Europe/Paris"  # read from the snapshot
    assert load_snapshot(config, env).view.timezone == "Europe/Paris"


def test_a_changed_file_or_variable_is_validated_again(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    load_config_cached(config, env)
    _tamper(_snapshot(cache), "Europe/Paris")
    assert load_config_cached(config, {**env, "TZ_FOR_TEST": "Asia/Tokyo"}).timezone == (
        "Asia/Tokyo"
    )
    config.write_text(config.read_text().replace("15 * * * *", "20 * * * *"))
    again = load_config_cached(config, env)
    assert again.tiers["hourly"].schedule == "20 * * * *"
    assert again.timezone == "UTC"


def test_a_snapshot_others_can_write_is_not_read(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    load_config_cached(config, env)
    snapshot = _snapshot(cache)
    _tamper(snapshot, "Europe/Paris")
    os.chmod(snapshot, 0o666)
    assert load_config_cached(config, env).timezone == "UTC"
    assert _snapshot(cache).stat().st_mode & 0o777 == 0o600  # replaced by a private one
    _tamper(_snapshot(cache), "Europe/Paris")
    os.chmod(cache, 0o777)
    assert load_config_cached(config, env).timezone == "UTC"


def test_a_corrupt_snapshot_is_validated_again(setup: tuple[Path, dict[str, str], Path]) -> None:
    config, env, cache = setup
    load_config_cached(config, env)
    _snapshot(cache).write_bytes(b"not a pickle")
    assert load_config_cached(config, env) == load_config(config, env)


def test_errors_name_key_and_file_and_leave_no_snapshot(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    config.write_text(config.read_text().replace("timeout: 30m", "timeout: soon"))
    with pytest.raises(ConfigError) as caught:
        load_config_cached(config, env)
    assert caught.value.path == str(config)
    assert any(p.startswith("tiers.hourly.timeout:") for p in caught.value.problems)
    assert not list(cache.glob("config-*"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_cached(config.with_name("missing.yaml"), env)


def test_no_home_no_snapshot(setup: tuple[Path, dict[str, str], Path]) -> None:
    config, _env, _cache = setup
    assert load_config_cached(config, {}) == load_config(config, {})


def test_old_snapshots_are_removed_when_one_is_written(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    cache.mkdir(mode=0o700)
    old, recent = cache / "config-old.pickle", cache / "config-recent.pickle"
    for path in (old, recent):
        path.write_bytes(b"x")
    os.utime(old, (0, 0))
    load_config_cached(config, env)
    assert not old.exists()
    assert recent.exists()


def test_the_view_is_the_configs_and_reading_it_imports_no_pydantic(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, _cache = setup
    config.write_text(
        config.read_text()
        + "  manual:\n    timeout: 60\n    enabled: false\n    gpus: all\n"
        + "images:\n  base:\n    dockerfile: Dockerfile\n"
    )
    (config.parent / "Dockerfile").write_text("FROM scratch\n")
    full = load_config(config, env)
    view = load_snapshot(config, env).view  # written by a full validation
    assert view == ConfigView.of(full)
    assert list(view.tiers) == list(full.tiers) == ["hourly", "manual", "image:base"]
    assert view.tiers["manual"].gpus == "all" and not view.tiers["manual"].enabled
    assert (view.db_path, view.state_dir, view.is_postgres) == (full.db_path, full.state_dir, False)
    code = (
        "import sys, json\nfrom pathlib import Path\n"
        "from scheduler.config_cache import load_snapshot\n"
        f"snap = load_snapshot(Path({str(config)!r}), {env!r})\n"
        "print(json.dumps([sorted(snap.view.tiers), sorted(sys.modules)]))\n"
        "snap.config()\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    out = python_c(code).stdout.splitlines()
    tiers, before = json.loads(out[0])
    assert tiers == sorted(full.tiers)
    assert not {m.split(".")[0] for m in before} & {"pydantic", "yaml", "apscheduler"}
    assert "pydantic" in json.loads(out[1])  # the full config, when asked, is pydantic's


def test_a_snapshot_whose_config_no_longer_loads_is_validated_again(
    setup: tuple[Path, dict[str, str], Path],
) -> None:
    config, env, cache = setup
    load_config_cached(config, env)
    payload = pickle.loads(_snapshot(cache).read_bytes())
    payload["config"] = b"not a pickle"
    _snapshot(cache).write_bytes(pickle.dumps(payload))
    assert load_snapshot(config, env).config() == load_config(config, env)
    assert isinstance(pickle.loads(pickle.loads(_snapshot(cache).read_bytes())["config"]), Config)


def test_the_host_checks_are_run_again_for_a_snapshot(tmp_path: Path) -> None:
    """``schedctl run`` takes a snapshot only while the host passes what validation checked."""
    project = tmp_path / "project"
    project.mkdir()
    config = load_config_for(tmp_path, project)
    assert host_agrees(config)
    assert not host_agrees(config.model_copy(update={"project": config.project.model_copy(
        update={"path": tmp_path / "gone"})}))  # fmt: skip
    nobody = config.local.model_copy(update={"user": "no-such-account-here"})
    assert not host_agrees(config.model_copy(update={"local": nobody}))
    root_uid = config.docker.model_copy(update={"uid": 0})
    assert not host_agrees(config.model_copy(update={"docker": root_uid}))


def load_config_for(tmp_path: Path, project: Path) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", project=project))
    return load_config(path)


PLAIN = """\
state_dir: {state}
timezone: Europe/Paris
project:
  path: {project}
daemon:
  grace: 30
tiers:
  hourly:
    schedule: "15 * * * *"
    timeout: 30m
    markers: hourly and not slow
  nightly:
    schedule: "30 2 * * 1-5"
    timeout: 7200
    gpus: 2
    kind: torchrun
  manual:
    enabled: false
    gpus: all
    timeout: 1.5h
"""


def _plain(tmp_path: Path, state: str = "") -> tuple[Path, dict[str, str], Path]:
    config = tmp_path / "config.yaml"
    config.write_text(PLAIN.format(state=state or tmp_path / "state", project=tmp_path))
    cache = tmp_path / "cache"
    return config, {CACHE_ENV: str(cache)}, cache


@pytest.mark.parametrize("state", ["", "relative/state"])
def test_the_view_from_the_yaml_is_the_full_validations(
    tmp_path: Path, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, env, _cache = _plain(tmp_path, state)
    light = view_from_yaml(config, config.read_text())
    assert light is not None
    assert light == ConfigView.of(load_config(config, env))
    # as the user names the file (the state dir resolved from its directory all the same)
    monkeypatch.chdir(tmp_path)
    relative = Path("config.yaml")
    assert view_from_yaml(relative, relative.read_text()) == ConfigView.of(load_config(relative))
    assert light.state_dir.is_absolute() and light.tiers["manual"].timeout == 5400


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("timezone: Europe/Paris", "timezone: Mars/Olympus"),
        ("timeout: 30m", "timeout: soon"),
        ("timeout: 30m", "timeout: 8d"),
        ('"15 * * * *"', '"61 * * * *"'),
        ("markers: hourly and not slow", "markers: hourly and"),
        ("gpus: 2", "gpus: 2000"),
        ("kind: torchrun", "kind: build"),
        ("daemon:\n", "images: {}\ndaemon:\n"),
        ("daemon:\n", "store: postgresql://u@h/db\ndaemon:\n"),
        ("daemon:\n  grace: 30", "daemon:\n  api: {socket: /tmp/x.sock}"),
        ("timezone: Europe/Paris", "timezone: ${TZ:-UTC}"),
        ("tiers:", "tiers: [oops"),
        ("state_dir: ", "state_dir: /proc/"),
    ],
)
def test_anything_the_view_from_the_yaml_doubts_is_left_to_the_full_validation(
    tmp_path: Path, old: str, new: str
) -> None:
    config, _env, _cache = _plain(tmp_path)
    text = config.read_text()
    assert old in text
    assert view_from_yaml(config.resolve(), text.replace(old, new, 1)) is None


def test_right_after_a_change_the_view_comes_from_the_yaml_and_the_snapshot_follows(
    tmp_path: Path,
) -> None:
    config, env, cache = _plain(tmp_path)
    view = load_view(config, env)
    assert view == ConfigView.of(load_config(config, env))
    snapshot = wait_for(lambda: next(cache.glob("config-*.pickle"), None), 60, "the snapshot")
    assert snapshot is not None and snapshot.stat().st_mode & 0o777 == 0o600
    wait_for(lambda: _loads(snapshot) is not None, 60, "a complete snapshot")
    assert load_snapshot(config, env).view == view


def _loads(path: Path) -> object | None:
    try:
        return pickle.loads(path.read_bytes())
    except Exception:
        return None


def test_a_config_the_background_validation_rejects_is_an_error_from_the_next_command_on(
    tmp_path: Path,
) -> None:
    config, env, cache = _plain(tmp_path)
    # A key the view does not read: only the full validation sees it is wrong.
    config.write_text(config.read_text().replace("  grace: 30", "  grace: forever"))
    load_view(config, env)  # the view (this command does not need daemon.grace)
    wait_for(lambda: next(cache.glob("config-*.rejected"), None), 60, "the rejection marker")
    with pytest.raises(ConfigError) as caught:
        load_view(config, env)
    assert caught.value.path == str(config)
    assert any(p.startswith("daemon.grace:") for p in caught.value.problems)
    assert not list(cache.glob("config-*.pickle"))
    # Fixed: a new input, the view again (and a snapshot, which clears the marker).
    config.write_text(config.read_text().replace("grace: forever", "grace: 30"))
    assert load_view(config, env).timezone == "Europe/Paris"
    wait_for(lambda: not list(cache.glob("config-*.rejected")), 60, "the marker cleared")


def test_the_view_from_the_yaml_imports_no_pydantic(tmp_path: Path) -> None:
    config, env, _cache = _plain(tmp_path)
    code = (
        "import sys, json\nfrom pathlib import Path\n"
        "from scheduler.config_cache import load_view\n"
        f"view = load_view(Path({str(config)!r}), {env!r})\n"
        "print(json.dumps([sorted(view.tiers), sorted(sys.modules)]))\n"
    )
    out = python_c(code).stdout
    tiers, modules = json.loads(out)
    assert tiers == ["hourly", "manual", "nightly"]
    assert not {m.split(".")[0] for m in modules} & {"pydantic", "apscheduler", "sqlalchemy"}


def test_the_background_validation_can_wait_for_the_command_to_finish(tmp_path: Path) -> None:
    config, env, cache = _plain(tmp_path)
    later: list[Callable[[], object]] = []
    view = load_view(config, env, defer=later.append)
    assert view.timezone == "Europe/Paris" and len(later) == 1
    assert not cache.exists()  # nothing started yet
    later[0]()
    wait_for(lambda: next(cache.glob("config-*.pickle"), None), 60, "the snapshot")
