"""The pages: each turns a request's parameters into a template name and its context.

Pure reads of the store (and, where given, the scheduler's next fire times, the git source's
commit log and the GPU probe), so the same :class:`Pages` serves the daemon's listener,
``schedctl web`` and the benchmark. Bad parameters raise :class:`BadRequest` (400), unknown runs
and tests :class:`NotFound` (404); nothing here formats HTML: templates escape every value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runners.base import JUNIT_FILE, LOG_FILE
from scheduler.history.owners import Owners
from scheduler.history.stats import History
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import SchedctlError, UnknownRunError, UsageError
from scheduler.kernel.outcome import Outcome
from scheduler.store.engine import FINAL_OUTCOMES, RunFilter, RunRecord, Store, change_range
from scheduler.web.charts import line_chart, outcome_class, strip
from scheduler.web.markers import markers_view

__all__ = ["BadRequest", "GpuCell", "NotFound", "Page", "Pages", "Sources"]

RUNS_PER_PAGE = 50
SPARK_RUNS = 30
TEST_HISTORY = 60
MAX_TEST_ROWS = 1000
EXCERPT_CHARS = 800
LOG_CHUNK = 64 * 1024
WINDOW_S = 30 * 86400.0
ARTIFACTS = {JUNIT_FILE: "JUnit XML", "coverage.xml": "coverage.xml", LOG_FILE: "full log"}
_TRIGGER = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SORTS = ("duration", "memory", "name")
FILTERS = ("tier", "outcome", "trigger", "since", "until")
NONE = "\N{EN DASH}"


class NotFound(SchedctlError):
    """An unknown run, test or page: answered 404."""


class BadRequest(UsageError):
    """A filter or parameter that cannot be used: answered 400 with this message."""


@dataclass(frozen=True)
class Page:
    template: str
    context: Mapping[str, Any]
    status: int = 200


@dataclass(frozen=True)
class GpuCell:
    index: int
    name: str
    state: str
    """``free``, ``leased`` or ``drained``."""
    detail: str = ""


@dataclass
class Sources:
    """What the pages read; everything but the store is optional."""

    store: Store
    tiers: Callable[[], Sequence[str]] | None = None
    next_fire: Callable[[], Mapping[str, datetime | None]] | None = None
    changes: Callable[[str, str], Sequence[str]] | None = None
    gpus: Callable[[], Sequence[GpuCell]] | None = None
    owners: Owners = field(default_factory=Owners)
    state_dir: Path | None = None
    clock: Callable[[], datetime] = utcnow
    markers_installed: bool | None = None


def _positive_int(value: str, what: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18 or int(value) < 1:
        raise BadRequest(f"{what} must be a positive integer, got {value[:40]!r}")
    return int(value)


def _day(value: str, what: str) -> datetime:
    if not _DAY.fullmatch(value):
        raise BadRequest(f"{what} must be a date YYYY-MM-DD, got {value[:40]!r}")
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise BadRequest(f"{what} is not a calendar date: {value!r}") from None


def run_id_of(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise NotFound(f"no run {text[:40]!r}")
    return int(text)


def _message_excerpt(message: str | None) -> str:
    if not message:
        return ""
    return message if len(message) <= EXCERPT_CHARS else message[:EXCERPT_CHARS] + " …"


class Pages:
    def __init__(self, sources: Sources) -> None:
        self.src = sources
        self.store = sources.store
        self.history = History(sources.store, sources.owners)

    # -- helpers -------------------------------------------------------------------------------

    def tiers(self) -> list[str]:
        configured = list(self.src.tiers()) if self.src.tiers else []
        return configured or self.store.known_tiers()

    def _run(self, run_id: int) -> RunRecord:
        try:
            return self.store.get_run(run_id)
        except UnknownRunError:
            raise NotFound(f"no run {run_id}") from None

    # -- overview ------------------------------------------------------------------------------

    def overview(self) -> Page:
        fires = self.src.next_fire() if self.src.next_fire else {}
        rows = []
        for name in self.tiers():
            last = self.store.last_run(name, outcomes=FINAL_OUTCOMES)
            active = self.store.active_runs(name)
            durations = self.store.tier_durations(name, SPARK_RUNS)
            rows.append({
                "name": name,
                "last": last,
                "active": active[0] if active else None,
                "streak": self.store.consecutive_failures(name),
                "next_fire": fires.get(name),
                "last_green": self.store.last_green(name),
                "spark": line_chart([d for _, d, _ in durations]),
                "spark_cells": strip([(o, f"run {i}", f"/runs/{i}") for i, _, o in durations], 4),
            })  # fmt: skip
        gpus = self._gpus()
        return Page("overview.html", {"rows": rows, "gpus": gpus, "title": "Overview"})

    def _gpus(self) -> list[GpuCell] | None:
        if self.src.gpus is None:
            return None
        try:
            return list(self.src.gpus())
        except SchedctlError:
            return []

    # -- runs ----------------------------------------------------------------------------------

    def runs(self, query: Mapping[str, str]) -> Page:
        known = {"tier", "outcome", "trigger", "since", "until", "before"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise BadRequest(f"unknown filter {unknown[0][:40]!r}; use {', '.join(sorted(known))}")
        tiers = self.tiers()
        tier = query.get("tier") or None
        if tier is not None and tier not in tiers:
            raise BadRequest(f"unknown tier {tier[:60]!r}; known: {', '.join(tiers) or 'none'}")
        outcome = query.get("outcome") or None
        if outcome is not None and outcome not in {o.value for o in Outcome}:
            raise BadRequest(f"unknown outcome {outcome[:40]!r}")
        trigger = query.get("trigger") or None
        if trigger is not None and not _TRIGGER.fullmatch(trigger):
            raise BadRequest(f"trigger must be a word like schedule or cli, got {trigger[:40]!r}")
        since = _day(query["since"], "since") if query.get("since") else None
        until = _day(query["until"], "until") + timedelta(days=1) if query.get("until") else None
        if since and until and since >= until:
            raise BadRequest("since must be on or before until")
        before = _positive_int(query["before"], "before") if query.get("before") else None
        where = RunFilter(tier, outcome, trigger, since, until)
        found = self.store.filter_runs(where, limit=RUNS_PER_PAGE + 1, before_id=before)
        more = len(found) > RUNS_PER_PAGE
        found = found[:RUNS_PER_PAGE]
        kept = {k: v for k, v in query.items() if k != "before" and v}
        older = {**kept, "before": str(found[-1].id)} if more and found else None
        return Page("runs.html", {
            "title": "Runs",
            "runs": found,
            "filters": {k: query.get(k, "") for k in FILTERS},
            "tiers": tiers,
            "outcomes": [o.value for o in Outcome],
            "older": older,
            "newest": kept if before else None,
        })  # fmt: skip

    # -- one run -------------------------------------------------------------------------------

    def run(self, run_text: str, query: Mapping[str, str]) -> Page:
        record = self._run(run_id_of(run_text))
        sort = query.get("sort") or "duration"
        if sort not in _SORTS:
            raise BadRequest(f"sort must be one of {', '.join(_SORTS)}, got {sort[:40]!r}")
        results = self.store.test_results_for(record.id, attempts=True)
        quarantined = {q.nodeid for q in self.store.quarantined(
            sorted({r.nodeid for r in results if r.outcome in ("failed", "error")}),
            self.src.clock())}  # fmt: skip
        keys: dict[str, Callable[[Any], Any]] = {
            "duration": lambda r: -r.duration_s,
            "memory": lambda r: -(r.peak_rss_bytes or 0),
            "name": lambda r: r.nodeid,
        }
        ordered = sorted(results, key=keys[sort])
        ordered.sort(key=lambda r: outcome_class(r.outcome) not in ("bad", "flaky"))
        shown = ordered[:MAX_TEST_ROWS]
        rows = []
        for r in shown:
            css = outcome_class(r.outcome)
            rows.append({
                "nodeid": r.nodeid,
                "href": "/test?id=" + quote(r.nodeid, safe="/:"),
                "outcome": r.outcome,
                "css": css,
                "attempt": r.attempt,
                "final": r.final,
                "duration": fmt_secs(r.duration_s),
                "memory": fmt_mib(r.peak_rss_bytes),
                "cuda": fmt_mib(r.cuda_peak_bytes),
                "owner": r.owner or "",
                "excerpt": _message_excerpt(r.message) if css in ("bad", "flaky") else "",
                "quarantined": r.nodeid in quarantined,
            })  # fmt: skip
        green = self.store.last_green(record.tier, before_id=record.id)
        return Page("run.html", {
            "title": f"Run {record.id}",
            "run": record,
            "css": outcome_class(record.outcome.value),
            "rows": rows,
            "hidden": len(ordered) - len(shown),
            "sort": sort,
            "green": green,
            "changes": self._changes(record, green),
            "artifacts": self._artifacts(record),
            "active": not record.outcome.is_final,
            "gpus": [_gpu_text(g) for g in record.gpus if isinstance(g, Mapping)],
            "provenance": _slurm(record.details),
        })  # fmt: skip

    def _changes(self, record: RunRecord, green: RunRecord | None) -> list[str] | None:
        span = change_range(green, record)
        if record.outcome is Outcome.PASSED or span is None or self.src.changes is None:
            return None
        try:
            return [str(c) for c in self.src.changes(*span)][:200]
        except SchedctlError as exc:
            return [f"(commit log unavailable: {exc})"]

    def _artifacts(self, record: RunRecord) -> list[tuple[str, str]]:
        if not record.run_dir:
            return []
        base = Path(record.run_dir)
        return [(name, label) for name, label in ARTIFACTS.items() if (base / name).is_file()]

    def artifact(self, run_text: str, name: str) -> Path:
        record = self._run(run_id_of(run_text))
        if name not in ARTIFACTS or not record.run_dir:
            raise NotFound(f"run {record.id} has no artifact {name[:60]!r}")
        path = Path(record.run_dir) / name
        if not path.is_file():
            raise NotFound(f"run {record.id} has no artifact {name[:60]!r}")
        return path

    # -- log -----------------------------------------------------------------------------------

    def log(self, run_text: str) -> Page:
        record = self._run(run_id_of(run_text))
        chunk = self.log_chunk(run_text, {})
        return Page("log.html", {
            "title": f"Run {record.id} log",
            "run": record,
            "chunk": chunk,
            "css": outcome_class(record.outcome.value),
        })  # fmt: skip

    def log_chunk(self, run_text: str, query: Mapping[str, str]) -> dict[str, Any]:
        """``{"text", "offset", "active", "truncated"}``: the log from ``offset`` (the tail
        when none), at most :data:`LOG_CHUNK` bytes, decoded leniently."""
        record = self._run(run_id_of(run_text))
        active = not record.outcome.is_final
        offset_text = query.get("offset")
        path = Path(record.run_dir) / LOG_FILE if record.run_dir else None
        try:
            size = path.stat().st_size if path is not None else 0
        except OSError:
            size = 0
        if offset_text is None:
            start = max(0, size - LOG_CHUNK)
        elif offset_text.isascii() and offset_text.isdigit() and len(offset_text) < 19:
            start = min(int(offset_text), size)
        else:
            raise BadRequest(f"offset must be a byte offset, got {offset_text[:40]!r}")
        data = b""
        if path is not None and size > start:
            try:
                with path.open("rb") as fh:
                    fh.seek(start)
                    data = fh.read(LOG_CHUNK)
            except OSError:
                data = b""
        return {
            "text": data.decode("utf-8", "replace"),
            "offset": start + len(data),
            "active": active,
            "truncated": offset_text is None and start > 0,
        }

    # -- one test ------------------------------------------------------------------------------

    def test(self, query: Mapping[str, str]) -> Page:
        nodeid = query.get("id", "")
        if not nodeid:
            raise BadRequest("missing test id: /test?id=NODEID")
        if len(nodeid) > 4096:
            raise BadRequest("test id longer than 4096 characters")
        now = self.src.clock()
        found = self.history.test(nodeid, now, since_s=WINDOW_S, last=TEST_HISTORY)
        if found is None:
            raise NotFound(f"no results for test {nodeid[:200]!r}")
        attempts = found["attempts"]
        finals = [a for a in attempts if a["final"]]
        cells = strip([
            (a["outcome"],
             f"run {a['run_id']} {a['tier']} {(a['sha'] or '')[:10]} {a['outcome']}"
             + (f" (attempt {a['attempt']})" if a["attempt"] else ""),
             f"/runs/{a['run_id']}")
            for a in attempts
        ])  # fmt: skip
        durations = line_chart([float(a["duration_s"] or 0.0) for a in finals], 480, 80, 4)
        memory_values = [a["peak_rss_bytes"] for a in finals if a["peak_rss_bytes"] is not None]
        memory = line_chart([float(v) / 2**20 for v in memory_values], 480, 80, 4)
        quarantine = self.store.quarantined([nodeid], now)
        return Page("test.html", {
            "title": "Test",
            "nodeid": nodeid,
            "stats": found["stats"],
            "owner": found["owner"],
            "cells": cells,
            "attempts": list(reversed(attempts)),
            "durations": durations,
            "memory": memory,
            "quarantine": quarantine[0] if quarantine else None,
        })  # fmt: skip

    # -- flaky & quarantine --------------------------------------------------------------------

    def flaky(self) -> Page:
        now = self.src.clock()
        flaky = self.history.tests(now, since_s=WINDOW_S, sort="flaky", limit=200, flaky_only=True)
        quarantine = self.store.quarantine_list()
        return Page("flaky.html", {
            "title": "Flaky & quarantine",
            "flaky": flaky,
            "quarantine": quarantine,
            "now": now,
        })  # fmt: skip

    # -- markers -------------------------------------------------------------------------------

    def markers(self) -> Page:
        view = markers_view(self.src.state_dir, installed=self.src.markers_installed)
        return Page("markers.html", {"title": "Markers", "view": view})


def fmt_secs(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 60:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{value:.3f}s"


def fmt_mib(value: int | None) -> str:
    return NONE if value is None else f"{value / 2**20:.1f} MiB"


def _gpu_text(gpu: Mapping[str, Any]) -> str:
    return " ".join(str(gpu.get(k)) for k in ("index", "name", "uuid") if gpu.get(k) is not None)


def _slurm(details: Any) -> list[tuple[str, str]]:
    prov = details.get("provenance") if isinstance(details, Mapping) else None
    if not isinstance(prov, Mapping):
        return []
    return [(str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in prov.items()][:20]
