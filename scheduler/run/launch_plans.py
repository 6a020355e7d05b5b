"""Launch plans remembered between runs: ``schedctl run`` starts its test process before it has
even validated its config.

The launcher of a local pytest run (:mod:`runners.prewarm`) needs only a
:class:`~runners.prewarm.Plan` -- interpreter, environment, account, instance -- which comes from
the validated config (:func:`scheduler.run.spec.launch_plan`). Validation costs ``schedctl run``
its largest share of start-up (pydantic's models, then the validators), so each run remembers
its plan, keyed by the config file's path and bytes, the tier, ``--runner`` and what else the
plan is made of (schedctl's interpreter, the effective uid, the variables the run's
environment takes from this one), and the next run of the same tier starts the launcher from it
right away. Once the config is validated the plan is made again; a launcher from a plan that
differs is discarded and the right one started. Even a wrong plan could not change a run: the
local runner sends "go" only to a launcher that fits the run (:meth:`Prewarm.mismatch`).

A docker run's plan (:class:`~runners.docker_prewarm.DockerPlan`, ``"kind": "docker"``) is the
container the run will make, less what only the run has; from it a container is created and
started early, and the docker runner uses it only when the run's container would be the same.

Plans live beside the config snapshots (:func:`scheduler.config_cache.cache_dir`), one JSON file
per config path; they name a program to execute, so they are only read when this user owns the
directory and the file and nobody else can write them (as the snapshots).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.prewarm import Plan
from scheduler.config_cache import cache_dir

if TYPE_CHECKING:
    from runners.docker_prewarm import DockerPlan

ENV_INPUTS = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")
"""The variables of this process that a run's environment takes (``spec.base_env``)."""


def recall(
    config_path: Path, tier: str, runner: str | None, env: Mapping[str, str] | None = None
) -> Plan | DockerPlan | None:
    """The plan the last run of ``tier`` remembered for this very input, if any."""
    env = os.environ if env is None else env
    found = _locate(config_path, tier, runner, env)
    if found is None:
        return None
    path, key, slot = found
    try:
        if not (_private(path.parent.stat()) and _private(path.stat())):
            return None
        entry = json.loads(path.read_text(encoding="utf-8")).get(slot)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        data = entry["plan"]
        if isinstance(data, dict) and data.get("kind") == "docker":
            from runners.docker_prewarm import DockerPlan

            return DockerPlan.from_json(data)
        return Plan.from_json(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def remember(
    config_path: Path,
    tier: str,
    runner: str | None,
    plan: Plan | DockerPlan,
    env: Mapping[str, str] | None = None,
) -> None:
    """Keep ``plan`` for the next run (best effort: a failure only costs that run the wait)."""
    env = os.environ if env is None else env
    found = _locate(config_path, tier, runner, env)
    if found is None:
        return
    path, key, slot = found
    entries: dict[str, Any] = {}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent.stat()):
            return
        with contextlib.suppress(OSError, ValueError):
            if _private(path.stat()):
                loaded = json.loads(path.read_text(encoding="utf-8"))
                entries = loaded if isinstance(loaded, dict) else {}
        entry = {"key": key, "plan": plan.to_json()}
        if entries.get(slot) == entry:
            return
        entries[slot] = entry
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        tmp.unlink(missing_ok=True)


def _locate(
    config_path: Path, tier: str, runner: str | None, env: Mapping[str, str]
) -> tuple[Path, str, str] | None:
    """The plans file of ``config_path``, the key the plan must carry, and its slot there."""
    where = cache_dir(env)
    try:
        text = config_path.read_bytes()
        absolute = config_path.resolve()
    except OSError:
        return None
    if where is None:
        return None
    digest = hashlib.sha256()
    parts = [str(absolute), sys.executable, str(os.geteuid())]
    parts += [f"{name}={env.get(name)}" for name in ENV_INPUTS]
    for part in parts:
        digest.update(part.encode() + b"\0")
    digest.update(text)
    name = f"launch-{hashlib.sha256(str(absolute).encode()).hexdigest()[:24]}.json"
    return where / name, digest.hexdigest(), f"{tier}|{runner or ''}"


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
