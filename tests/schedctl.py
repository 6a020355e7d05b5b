"""``schedctl`` on a config file: as a user runs it (a process of its own, see also
:data:`tests.conftest.SCHEDCTL`), or in this process through click's runner."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.conftest import SCHEDCTL


def schedctl(
    config: Path, *args: str, timeout: float = 180, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``schedctl --config CONFIG ARGS...``; never raises on its exit code."""
    return subprocess.run(
        [*SCHEDCTL, "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else dict(env),
    )  # fmt: skip


def run_json(
    config: Path, *args: str, timeout: float = 180, env: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """``schedctl run ARGS... --json``: its exit code and its JSON object."""
    proc = schedctl(config, "run", *args, "--json", timeout=timeout, env=env)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def invoke(config: Path, *args: str) -> tuple[int, str]:
    """``schedctl --config CONFIG ARGS...`` in this process: the exit code as ``schedctl``'s
    ``main`` maps it (a SchedctlError carries its own) and the output."""
    from click.testing import CliRunner

    from scheduler.cli import cli
    from scheduler.kernel.errors import SchedctlError

    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    if isinstance(result.exception, SchedctlError):
        return result.exception.exit_code, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
