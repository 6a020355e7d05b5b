"""local.user: a root daemon's local-runner tests run unprivileged (issue 20, "What to build")."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runners.base import RunSpec
from runners.local import LocalRunner
from runners.registry import RunnerFactory
from scheduler.config import Config
from scheduler.daemon.assembly import build_dispatcher
from scheduler.kernel.errors import ConfigError
from scheduler.kernel.outcome import Termination
from scheduler.store.engine import Store
from tests.conftest import SCHEDCTL, SUITE, require

PROBE = """
import os, sys
out, secret = sys.argv[1], sys.argv[2]
try:
    open(secret).read()
    seen = "READ"
except PermissionError:
    seen = "denied"
with open(os.path.join(out, "who"), "w") as fh:
    fh.write(f"{os.getuid()} {os.getgid()} {sorted(os.getgroups())} {seen}")
"""

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs a root daemon (CI runs as root)")
# The venv's interpreter may live under /root (pyenv), which nobody cannot enter: the probe
# runs on the system's python3, as a local.user deployment's project.python would.
SYSTEM_PYTHON = Path("/usr/bin/python3")


@root_only
def test_root_daemon_runs_tests_as_local_user(tmp_path: Path) -> None:
    """As root with user=nobody: the test process is nobody with no extra groups, writes its
    run dir under a 0700 state dir, and cannot read a root-only 0600 file."""
    require(SYSTEM_PYTHON.is_file(), f"{SYSTEM_PYTHON} missing")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    run_dir = state / "runs" / "1"
    run_dir.mkdir(parents=True, mode=0o700)
    secret = state / "secret"
    secret.write_text("TOKEN")
    secret.chmod(0o600)
    argv = [str(SYSTEM_PYTHON), "-c", PROBE, str(run_dir), str(secret)]
    spec = RunSpec(uuid.uuid4().hex[:8], "hourly", argv, Path("/"), run_dir, 60.0)
    result = LocalRunner(user="nobody").run(spec, threading.Event())
    assert result.exit_code == 0, spec.log_path.read_text(errors="replace")
    uid, gid, groups, seen = (run_dir / "who").read_text().split(" ", 3)
    assert (int(uid), int(gid)) == (65534, 65534) and groups == "[]"
    assert seen == "denied"
    assert oct(state.stat().st_mode & 0o777) == "0o701"  # search only: never listable


def test_non_root_or_unset_changes_nothing(tmp_path: Path) -> None:
    """Without local.user the runner keeps the daemon's user (today's behaviour)."""
    assert LocalRunner().run_as is None


def test_local_user_reaches_the_daemons_local_runner(make_config: Callable[..., Config]) -> None:
    config = make_config(local={"user": "nobody"})
    factory = build_dispatcher(config, Store(config.db_path)).runners
    assert isinstance(factory, RunnerFactory)
    runner = factory.get("local")
    assert isinstance(runner, LocalRunner)
    assert (runner.run_as is not None) == (os.geteuid() == 0)


@pytest.mark.parametrize(("user", "match"), [("root", "is root"), ("no-such-x", "no account")])
def test_bad_local_user_is_a_config_error(
    make_config: Callable[..., Config], user: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=rf"local\.user.*{match}"):
        make_config(local={"user": user})


# -- the default: a root daemon's local tests run as nobody unless it opts out -----------------


def test_run_as_defaults_to_nobody_only_for_root(make_config: Callable[..., Config]) -> None:
    default = make_config(local={}).local
    assert (default.run_as(euid=0), default.run_as(euid=1000)) == ("nobody", None)
    named = make_config(local={"user": "daemon"}).local
    assert (named.run_as(euid=0), named.run_as(euid=1000)) == ("daemon", None)
    opted_out = make_config(local={"allow_root": True}).local
    assert opted_out.run_as(euid=0) is None


def test_user_and_allow_root_together_are_a_config_error(
    make_config: Callable[..., Config],
) -> None:
    with pytest.raises(ConfigError, match=r"local\.user and local\.allow_root exclude each other"):
        make_config(local={"user": "nobody", "allow_root": True})


def daemon_local_runner(config: Config) -> LocalRunner:
    runner = build_dispatcher(config, Store(config.db_path)).runners.get("local")
    assert isinstance(runner, LocalRunner)
    return runner


@root_only
def test_root_daemon_without_local_user_runs_tests_as_nobody(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    """No local.user, no allow_root, daemon as root: a real run of the daemon's local runner
    is not root and cannot read a root-only 0600 file; allow_root keeps root (the opt-out)."""
    require(SYSTEM_PYTHON.is_file(), f"{SYSTEM_PYTHON} missing")
    secret = tmp_path / "secret"
    secret.write_text("TOKEN")
    secret.chmod(0o600)

    def probe(config: Config, name: str) -> tuple[int, str]:
        run_dir = tmp_path / name / "run"
        run_dir.mkdir(parents=True, mode=0o700)
        argv = [str(SYSTEM_PYTHON), "-c", PROBE, str(run_dir), str(secret)]
        spec = RunSpec(uuid.uuid4().hex[:8], "hourly", argv, Path("/"), run_dir, 60.0)
        result = daemon_local_runner(config).run(spec, threading.Event())
        assert result.exit_code == 0, result.message or spec.log_path.read_text(errors="replace")
        uid, _gid, _groups, seen = (run_dir / "who").read_text().split(" ", 3)
        return int(uid), seen

    uid, seen = probe(make_config(local={}), "default")
    assert uid != 0 and uid == 65534 and seen == "denied"
    assert probe(make_config(local={"allow_root": True}), "opted-out") == (0, "READ")


@root_only
def test_unreachable_interpreter_fails_naming_the_keys(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    """A program nobody cannot reach (under a 0700 dir) is an infra error that names local.user
    and local.allow_root, before anything starts or any dir is handed over."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    python = hidden / "python3"
    python.symlink_to(SYSTEM_PYTHON)
    run_dir = tmp_path / "run"
    spec = RunSpec("r1", "hourly", [str(python), "-c", "pass"], Path("/"), run_dir, 60.0)
    result = daemon_local_runner(make_config(local={})).run(spec, threading.Event())
    assert result.termination is Termination.INFRA and result.exit_code is None
    assert result.message is not None
    assert f"cannot run {python}" in result.message
    assert "local.user" in result.message and "local.allow_root: true" in result.message
    assert not any(run_dir.iterdir())  # nothing handed over, nothing started


@root_only
def test_cli_run_as_root_names_the_keys_when_nobody_cannot_reach_python(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`schedctl run` as root with the default account and an interpreter under a 0700 dir:
    the run is recorded infra-error, and the message says which keys fix it."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "python3").symlink_to(SYSTEM_PYTHON)
    project = {"path": str(SUITE), "python": str(hidden / "python3")}
    config = write_config(project=project, local={})
    proc = subprocess.run(
        [*SCHEDCTL, "--config", str(config), "run", "hourly"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "infra-error" in out, out
    assert "local.user 'nobody' cannot run" in out and "local.allow_root: true" in out, out
