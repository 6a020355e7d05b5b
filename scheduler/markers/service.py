"""One call for the CLI and the ``review`` kind: collect at a ref, audit, plan."""

from __future__ import annotations

from datetime import datetime

from runners.registry import RunnerFactory
from scheduler.config import Config
from scheduler.kernel.errors import UsageError
from scheduler.markers.audit import Audit, audit, pytest_tiers
from scheduler.markers.collect import collect
from scheduler.markers.recommend import Plan, plan
from scheduler.store import Store


def collecting_tier(config: Config, tier: str | None) -> str:
    """``--tier``, else the hourly tier, else the first pytest tier: whose runner collects."""
    tiers = pytest_tiers(config)
    if tier is not None:
        if config.tier(tier).kind != "pytest":
            raise UsageError(f"--tier: {tier!r} is a {config.tier(tier).kind} tier, not pytest")
        return tier
    if config.markers.hourly_tier in tiers:
        return config.markers.hourly_tier
    if not tiers:
        raise UsageError(f"{config.source_file}: tiers: no enabled pytest tier to audit")
    return tiers[0]


def audit_at(
    config: Config,
    store: Store,
    now: datetime,
    *,
    tier: str | None = None,
    ref: str | None = None,
    runners: RunnerFactory | None = None,
    runner_name: str | None = None,
) -> tuple[Audit, Plan]:
    collection = collect(
        config, collecting_tier(config, tier), ref=ref, runners=runners, runner_name=runner_name
    )
    found = audit(config, store, collection, now)
    return found, plan(config, found)
