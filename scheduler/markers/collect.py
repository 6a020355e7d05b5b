"""The real suite at a ref, collected (``--collect-only``) in a tier's runner and image.

The collection runs exactly as the tier's tests would (same runner, image, interpreter, clean
environment, results plugin, marker catalog), without ``-m``, the tier's ``paths`` or its
``args`` (so every test is seen and ``-x``/``-n`` cannot cut it short). The plugin writes one
``item`` line per test with its markers; a collection error (or a session that never reported)
raises :class:`CollectionFailed`: a distribution from a partial collection is never returned.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from runners.base import NONCE_ENV, RESULTS_FILE, Runner
from runners.registry import RunnerFactory, instance_of
from scheduler.config import Config
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import SchedctlError, UsageError
from scheduler.run.spec import batch_request, build_pytest_spec
from scheduler.source import Source

COLLECT_TIMEOUT_S = 600.0
MAX_NODEID = 2000
MAX_MARKERS = 64


class CollectionFailed(SchedctlError):
    """The suite could not be collected whole (errors, or pytest never reported)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


@dataclass(frozen=True)
class Collection:
    """Every collected test id with its marker names, and the project's registered markers."""

    items: dict[str, frozenset[str]]
    registered: tuple[str, ...]
    sha: str | None = None
    ref: str | None = None
    tier: str = ""
    runner: str = ""
    collected_at: datetime = field(default_factory=utcnow)
    workdir: Path | None = None


def parse_collection(
    path: Path, nonce: str | None
) -> tuple[Collection, int | None, list[tuple[str, str]]]:
    """The items, the session's exit status (None: no session line) and the collection errors.

    Written by the process under test: lines without the nonce, bad JSON or odd fields are
    skipped; node ids and marker lists are bounded.
    """
    items: dict[str, frozenset[str]] = {}
    registered: set[str] = set()
    errors: list[tuple[str, str]] = []
    status: int | None = None
    try:
        fh = path.open(encoding="utf-8", errors="replace")
    except OSError:
        return Collection({}, ()), None, []
    with fh:
        for line in fh:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(record, dict) or (nonce and record.get("nonce") != nonce):
                continue
            kind = record.get("type")
            if kind == "item":
                nodeid, markers = record.get("nodeid"), record.get("markers")
                if isinstance(nodeid, str) and 0 < len(nodeid) <= MAX_NODEID:
                    listed: list[Any] = markers if isinstance(markers, list) else []
                    items[nodeid] = frozenset(
                        m for m in listed[:MAX_MARKERS] if isinstance(m, str) and len(m) <= 100
                    )
            elif kind == "markers":
                names = record.get("registered")
                if isinstance(names, list):
                    registered.update(m for m in names if isinstance(m, str) and len(m) <= 100)
            elif kind == "collect_error":
                errors.append(
                    (str(record.get("nodeid", ""))[:MAX_NODEID], str(record.get("longrepr"))[:2000])
                )
            elif kind == "session":
                value = record.get("exitstatus")
                status = value if isinstance(value, int) else -1
    return Collection(items, tuple(sorted(registered))), status, errors


def collect_in(
    config: Config,
    tier_name: str,
    runner: Runner,
    workdir: Path,
    run_dir: Path,
    cancel: threading.Event | None = None,
) -> Collection:
    """Collect the tree at ``workdir`` with ``runner`` as ``tier_name``'s runs would.

    Raises :class:`CollectionFailed` on any collection error or a session that did not finish.
    """
    tier = config.tier(tier_name)
    collect_tier = tier.model_copy(
        update={"markers": None, "coverage": False, "paths": [], "reruns": 0,
                "args": ["--collect-only", "-q"]}
    )  # fmt: skip
    spec = build_pytest_spec(
        config, collect_tier, run_id=0, tier_name=tier_name, markers=None,
        timeout_s=min(tier.timeout, COLLECT_TIMEOUT_S), workdir=workdir, run_dir=run_dir,
        in_container=runner.in_container, devices=(), host=socket.gethostname(),
        batch=batch_request(config, tier_name, gpus_per_node=0) if runner.leases_gpus else None,
    )  # fmt: skip
    result = runner.run(spec, cancel or threading.Event())
    found, status, errors = parse_collection(run_dir / RESULTS_FILE, spec.env.get(NONCE_ENV))
    where = f"tier {tier_name} ({runner.alias})"
    if errors:
        raise CollectionFailed(
            f"collection in {where} had {len(errors)} error(s): "
            + "; ".join(nodeid or "<session>" for nodeid, _ in errors[:5])
            + f" (log: {spec.log_path})",
            errors,
        )
    if status is None or status not in (0, 5):
        detail = result.message or f"exit code {result.exit_code}"
        raise CollectionFailed(
            f"collection in {where} did not finish (pytest status {status}, {detail}; "
            f"log: {spec.log_path})"
        )
    return Collection(found.items, found.registered, tier=tier_name, runner=runner.alias)


def collect(
    config: Config,
    tier_name: str,
    *,
    ref: str | None = None,
    runners: RunnerFactory | None = None,
    runner_name: str | None = None,
) -> Collection:
    """Collect the suite at ``ref`` as ``tier_name``'s runs would; raises CollectionFailed."""
    tier = config.tier(tier_name)
    if tier.kind != "pytest":
        raise UsageError(f"tier {tier_name!r} is a {tier.kind} tier; audit a pytest tier")
    factory = runners or RunnerFactory(
        instance=instance_of(config.state_dir),
        docker_user=f"{config.docker.uid}:{config.docker.gid}",
        local_user=config.local.run_as(),
    )
    runner = factory.get(config.runner_for(tier_name, runner_name))
    source = Source(config.project, config.state_dir)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    run_dir = config.state_dir / "markers" / f"collect-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    checkout = source.checkout(ref, f"audit-{stamp}")
    try:
        found = collect_in(config, tier_name, runner, checkout.path, run_dir)
    except CollectionFailed as exc:
        # The collection's dir stays: the error names its log.
        raise CollectionFailed(f"{exc} at {ref or 'the default ref'}", exc.errors) from None
    finally:
        source.release(checkout, keep=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    return replace(
        found, sha=checkout.sha, ref=ref,
        workdir=checkout.path if not checkout.is_worktree else None,
    )  # fmt: skip
