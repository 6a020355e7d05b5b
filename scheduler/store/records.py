"""Plain data the store hands out for runs and test results: no SQL, no connection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from scheduler.kernel.outcome import Outcome
from scheduler.store.base import aware

__all__ = [
    "QuarantineRow",
    "RunRecord",
    "TestResultRow",
    "change_range",
    "failures_in_a_row",
    "result_rows",
    "result_values",
]


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``."""

    id: int
    tier: str
    kind: str
    trigger: str
    outcome: Outcome
    queued_at: datetime
    reason: str = ""
    slot: datetime | None = None
    idempotency_key: str | None = None
    exit_code: int | None = None
    ref: str | None = None
    sha: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    runner: str | None = None
    host: str | None = None
    owner_pid: int | None = None
    owner_identity: str | None = None
    image: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    gpus: Sequence[Mapping[str, Any]] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    markers: str | None = None
    argv: Sequence[str] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    pruned_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        names = {f.name for f in fields(cls)}
        data = {k: aware(v) for k, v in row.items() if k in names}
        data["outcome"] = Outcome(data["outcome"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Outcome):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["run_id"] = self.id
        return out


def change_range(green: RunRecord | None, record: RunRecord) -> tuple[str, str] | None:
    """``(green sha, run sha)`` when the run tested another commit than the last green run."""
    if green is None or not green.sha or not record.sha or green.sha == record.sha:
        return None
    return green.sha, record.sha


@dataclass(frozen=True)
class TestResultRow:
    """One test's result as stored."""

    __test__ = False  # not a pytest test class despite the name

    nodeid: str
    outcome: str
    duration_s: float = 0.0
    markers: str = ""
    message: str | None = None
    attempt: int = 0
    """0 for the run's first pytest process, n for its n-th rerun of the failed tests."""
    final: bool = True
    """False for an attempt a later rerun of the same test superseded."""
    peak_rss_bytes: int | None = None
    """The test's peak resident memory above the process's resident set at its start."""
    rss_method: str | None = None
    cuda_peak_bytes: int | None = None
    owner: str | None = None


def result_rows(found: list[Sequence[Any]], attempts: bool) -> list[TestResultRow]:
    """A run's result rows (the ``run_results`` read: seq, nodeid, outcome, duration, markers,
    message, attempt, final, peak, rss method, CUDA peak, owner) in the order they were
    reported: each test's final attempt, or (``attempts``) every one."""
    found.sort(key=lambda r: int(r[0]))
    return [
        TestResultRow(
            nodeid=r[1],
            outcome=r[2],
            duration_s=r[3],
            markers=r[4],
            message=r[5],
            attempt=int(r[6] or 0),
            final=bool(r[7]),
            peak_rss_bytes=r[8],
            rss_method=r[9],
            cuda_peak_bytes=r[10],
            owner=r[11],
        )
        for r in found
        if attempts or r[7]
    ]


@dataclass(frozen=True)
class QuarantineRow:
    nodeid: str
    reason: str
    created_at: datetime
    owner: str | None = None
    expires_at: datetime | None = None
    expiry_alerted_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "reason": self.reason,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expiry_alerted_at": (
                self.expiry_alerted_at.isoformat() if self.expiry_alerted_at else None
            ),
        }


def stored_isoformat(value: Any) -> str:
    """A stored datetime as ``RunRecord.to_json`` writes it (UTC, ISO 8601)."""
    if isinstance(value, str) and len(value) == 26 and value[10] == " ":
        # SQLite's text, naive UTC ("2026-01-01 10:00:00.000000"): as isoformat() writes it
        micro = value[19:]
        return f"{value[:10]}T{value[11:19]}{'' if micro == '.000000' else micro}+00:00"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return str(aware(when).isoformat())


def failures_in_a_row(outcomes: Iterable[str]) -> int:
    """Test-failure outcomes, newest first, up to the first pass: a tier's failure streak.

    Infra outcomes neither count nor break it.
    """
    count = 0
    for value in outcomes:
        outcome = Outcome(value)
        if outcome is Outcome.PASSED:
            break
        if outcome.is_test_failure:
            count += 1
    return count


def result_values(
    run_id: int, results: Sequence[TestResultRow], ids: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The ``test_results`` rows of a run's results; ``seq`` keeps the order they came in."""
    return [
        {
            "test_id": ids[r.nodeid],
            "run_id": run_id,
            "attempt": r.attempt,
            "seq": seq,
            "final": r.final,
            "outcome": r.outcome,
            "duration_s": r.duration_s,
            "markers": r.markers,
            "message": r.message,
            "peak_rss_bytes": r.peak_rss_bytes,
            "rss_method": r.rss_method,
            "cuda_peak_bytes": r.cuda_peak_bytes,
            "owner": r.owner,
        }
        for seq, r in enumerate(results)
    ]
