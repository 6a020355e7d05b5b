"""local.user: a root daemon's local-runner tests run unprivileged (issue 20, "What to build")."""

from __future__ import annotations

import os
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
from scheduler.store.engine import Store
from tests.conftest import require

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
