"""The 1-vs-N comparison: summaries of each world size in, a ``passed``/``failed`` verdict out.

Rules, each failure named in ``Verdict.reasons``:

* every run has a summary (a missing one means the run timed out or crashed);
* every summary's checks hold (``allreduce_ok``, ``params_in_sync``, ``loss_decreased``);
* the final loss of each N is within ``loss_rtol`` of the baseline's (the smallest N, normally 1);
* scaling efficiency ``(samples/s at N / N) / (samples/s at base / base)`` is at least
  ``min_efficiency`` on GPU; on CPU it is only reported unless ``enforce_efficiency_on_cpu``.

Pure Python, no torch: the scheduler imports it to judge runs and ``schedctl show`` to print them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

CHECKS = ("allreduce_ok", "params_in_sync", "loss_decreased")
NOT_EVALUATED_OK = frozenset({"loss_decreased"})
CHECK_MEANING = {
    "allreduce_ok": "an all-reduce of known values gave a wrong sum",
    "params_in_sync": "the ranks' parameters diverged",
    "loss_decreased": "the loss did not go down",
}

Status = Literal["passed", "failed"]


class ThresholdsLike(Protocol):
    """The fields of ``scheduler.config.Thresholds`` that the comparison reads."""

    @property
    def loss_rtol(self) -> float: ...

    @property
    def min_efficiency(self) -> float: ...

    @property
    def enforce_efficiency_on_cpu(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    """The result of the comparison; ``table`` has one row per world size, in ascending order."""

    status: Status
    reasons: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    on_gpu: bool = False
    efficiency_enforced: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def efficiency(self) -> dict[int, float]:
        """Scaling efficiency per world size, for metrics (rows without a number are left out)."""
        return {
            int(row["world_size"]): float(row["efficiency"])
            for row in self.table
            if row.get("efficiency") is not None
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "table": [dict(row) for row in self.table],
            "on_gpu": self.on_gpu,
            "efficiency_enforced": self.efficiency_enforced,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        status = data.get("status")
        if status not in ("passed", "failed"):
            raise ValueError(f"not a verdict: status {status!r}")
        return cls(
            status=status,
            reasons=[str(r) for r in data.get("reasons", [])],
            table=[dict(row) for row in data.get("table", [])],
            on_gpu=bool(data.get("on_gpu", False)),
            efficiency_enforced=bool(data.get("efficiency_enforced", False)),
        )


def compare(
    runs: Mapping[int, Mapping[str, Any] | None], thresholds: ThresholdsLike, on_gpu: bool
) -> Verdict:
    """Judge the runs of one tier, keyed by the number of processes each was launched with."""
    enforced = on_gpu or thresholds.enforce_efficiency_on_cpu
    if not runs:
        return Verdict("failed", ["no runs to compare"], [], on_gpu, enforced)
    reasons: list[str] = []
    base_n = min(runs)
    base = runs[base_n]
    table = []
    for n in sorted(runs):
        summary = runs[n]
        row = _row(n, summary, base_n, base)
        table.append(row)
        reasons.extend(_run_reasons(n, summary, base_n, base, row, thresholds, on_gpu))
    return Verdict("failed" if reasons else "passed", reasons, table, on_gpu, enforced)


def _row(
    n: int, summary: Mapping[str, Any] | None, base_n: int, base: Mapping[str, Any] | None
) -> dict[str, Any]:
    if summary is None:
        return {
            "world_size": n,
            "status": "missing",
            "final_loss": None,
            "loss_rel_diff": None,
            "samples_per_s": None,
            "efficiency": None,
            "peak_memory_mb": None,
            "checks": "no summary",
        }
    failed = _failed_checks(summary)
    return {
        "world_size": n,
        "status": "ok" if not failed else "checks failed",
        "final_loss": _number(summary.get("final_loss")),
        "loss_rel_diff": _loss_rel_diff(summary, base),
        "samples_per_s": _number(summary.get("samples_per_s")),
        "efficiency": efficiency(n, summary, base_n, base),
        "peak_memory_mb": _number(summary.get("peak_memory_mb")),
        "checks": "ok" if not failed else ",".join(failed),
    }


def _run_reasons(
    n: int,
    summary: Mapping[str, Any] | None,
    base_n: int,
    base: Mapping[str, Any] | None,
    row: Mapping[str, Any],
    thresholds: ThresholdsLike,
    on_gpu: bool,
) -> list[str]:
    if summary is None:
        return [f"N={n}: the run produced no summary (timed out or crashed)"]
    reasons = [
        f"N={n}: check {name} failed ({CHECK_MEANING.get(name, 'reported by the program')})"
        for name in _failed_checks(summary)
    ]
    world = summary.get("world_size")
    if world != n:
        reasons.append(f"N={n}: the run reports world size {world}, expected {n}")
    if reasons or n == base_n or base is None or _failed_checks(base):
        return reasons  # loss and speed of a run that failed its checks mean nothing
    rel = row["loss_rel_diff"]
    if rel is None:
        reasons.append(f"N={n}: final loss missing, cannot compare it with N={base_n}")
    elif rel > thresholds.loss_rtol:
        reasons.append(
            f"N={n}: final loss {row['final_loss']:.6g} differs from N={base_n}'s "
            f"{_number(base.get('final_loss')):.6g} by {rel:.1%} (> {thresholds.loss_rtol:.1%})"
        )
    eff = row["efficiency"]
    enforce = on_gpu or thresholds.enforce_efficiency_on_cpu
    if enforce and eff is not None and eff < thresholds.min_efficiency:
        reasons.append(
            f"N={n}: scaling efficiency {eff:.2f} is below {thresholds.min_efficiency:.2f}"
        )
    elif enforce and eff is None:
        reasons.append(f"N={n}: no throughput numbers, cannot compute the scaling efficiency")
    return reasons


def efficiency(
    n: int, summary: Mapping[str, Any], base_n: int, base: Mapping[str, Any] | None
) -> float | None:
    """``(samples/s at n / n) / (samples/s at base_n / base_n)``; 1.0 for the baseline itself."""
    if base is None:
        return None
    rate = _number(summary.get("samples_per_s"))
    base_rate = _number(base.get("samples_per_s"))
    if rate is None or base_rate is None or base_rate <= 0:
        return None
    return round((rate / n) / (base_rate / base_n), 4)


def _loss_rel_diff(summary: Mapping[str, Any], base: Mapping[str, Any] | None) -> float | None:
    loss = _number(summary.get("final_loss"))
    base_loss = _number(base.get("final_loss")) if base is not None else None
    if loss is None or base_loss is None:
        return None
    return round(abs(loss - base_loss) / max(abs(base_loss), 1e-12), 6)


def _failed_checks(summary: Mapping[str, Any]) -> list[str]:
    """Checks that do not hold; ``loss_decreased: null`` means not evaluated (training stopped)."""
    failed = [
        name
        for name in CHECKS
        if summary.get(name) is not True
        and not (name in NOT_EVALUATED_OK and name in summary and summary[name] is None)
    ]
    extra = [str(c) for c in summary.get("checks_failed") or [] if str(c) not in failed]
    return failed + extra


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


_COLUMNS = (
    ("N", "world_size", "{:d}"),
    ("final loss", "final_loss", "{:.6g}"),
    ("Δloss", "loss_rel_diff", "{:.2%}"),
    ("samples/s", "samples_per_s", "{:,.0f}"),
    ("efficiency", "efficiency", "{:.2f}"),
    ("peak MiB", "peak_memory_mb", "{:,.0f}"),
    ("checks", "checks", "{}"),
)


def format_table(verdict: Verdict) -> str:
    """The side-by-side table and the verdict, as plain text for ``schedctl show``."""
    header = [title for title, _, _ in _COLUMNS]
    body = [[_cell(row.get(key), fmt) for _, key, fmt in _COLUMNS] for row in verdict.table]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
        for line in [header, *body]
    ]
    where = "GPU" if verdict.on_gpu else "CPU"
    if not verdict.efficiency_enforced:
        where += ", efficiency reported only"
    lines.append(f"verdict: {verdict.status} ({where})")
    lines.extend(f"  - {reason}" for reason in verdict.reasons)
    return "\n".join(lines)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "{:d}" and isinstance(value, float):
        value = int(value)
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)
