"""The JSON payloads shared by the control API, its client and the CLI (plain dicts: no pydantic).

``schedctl run --json`` prints :func:`run_summary` whether the run happened in-process or in
the daemon, so scripts never see which path was taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.config_view import TierTable
    from scheduler.store.reader import RunReader
    from scheduler.store.records import RunRecord


def run_summary(record: RunRecord) -> dict[str, Any]:
    """The ``--json`` object of ``schedctl run`` and the final line of a run's event stream."""
    from scheduler.run.results import empty_counts

    counts = {**empty_counts(), **dict(record.counts)}
    return {
        "run_id": record.id,
        "tier": record.tier,
        "trigger": record.trigger,
        "outcome": record.outcome.value,
        "reason": record.reason,
        "exit_code": record.exit_code,
        "counts": counts,
        "duration_s": record.duration_s,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "sha": record.sha,
        "runner": record.runner,
        "details": dict(record.details),
    }


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def tier_rows(
    config: TierTable, store: RunReader, next_fire: Mapping[str, datetime | None]
) -> list[dict[str, Any]]:
    """One row per configured tier: schedule, last outcome, failures in a row, next fire."""
    rows = []
    for name, tier in config.tiers.items():
        last = store.last_run(name)
        rows.append(
            {
                "tier": name,
                "schedule": tier.schedule,
                "enabled": tier.enabled,
                "kind": tier.kind,
                "markers": tier.markers,
                "timeout_s": tier.timeout,
                "gpus": tier.gpus,
                "last_run_id": last.id if last else None,
                "last_outcome": last.outcome.value if last else None,
                "last_finished_at": iso(last.finished_at) if last else None,
                "consecutive_failures": store.consecutive_failures(name),
                "next": iso(next_fire.get(name)),
            }
        )
    return rows


def status_payload(
    config: TierTable,
    store: RunReader,
    next_fire: Mapping[str, datetime | None],
    daemon: Mapping[str, Any],
) -> dict[str, Any]:
    """``GET /v1/status`` and ``schedctl status --json``."""
    leases = [
        {k: iso(v) if isinstance(v, datetime) else v for k, v in lease.items()}
        for lease in store.active_leases()
    ]
    return {
        "daemon": dict(daemon),
        "tiers": tier_rows(config, store, next_fire),
        "active_runs": [r.to_json() for r in store.active_runs()],
        "gpu_leases": leases,
    }
