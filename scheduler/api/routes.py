"""The control API's endpoints as plain methods over a running daemon
(:class:`~scheduler.daemon.scheduler.Daemon`).

Nothing here knows about sockets or HTTP framing: each endpoint returns a :class:`Reply` (status
and JSON body) or a :class:`Stream` (NDJSON lines), and raises the project's own errors, which
the server maps to status codes in one place.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from runners.base import RESULTS_FILE
from scheduler import __version__
from scheduler.api.schema import (
    CancelBody,
    SubmitBody,
    iso,
    run_summary,
    status_payload,
    tier_rows,
)
from scheduler.kernel.errors import UsageError
from scheduler.run.dispatch import RunRequest

if TYPE_CHECKING:
    from scheduler.daemon.scheduler import Daemon

M = TypeVar("M", bound=BaseModel)

STREAM_POLL_S = 0.2
HEARTBEAT_S = 10.0
MAX_LIMIT = 1000


class BadRequest(UsageError):
    """The request itself is malformed (JSON, fields, query): HTTP 400."""


class Conflict(UsageError):
    """The request is well-formed but the run is not in a state that allows it: HTTP 409."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


@dataclass(frozen=True)
class Stream:
    """NDJSON lines, one JSON value per line, written as they are produced."""

    lines: Iterator[dict[str, Any]]


Handler = Callable[["re.Match[str]", Mapping[str, str], Any], "Reply | Stream"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    mutating: bool


class ControlApi:
    """Endpoints of ``/v1``; ``stopping`` ends event streams when the server shuts down."""

    def __init__(self, daemon: Daemon, stopping: threading.Event) -> None:
        self.daemon = daemon
        self.stopping = stopping
        self.routes = [
            Route("GET", re.compile(r"/v1/status"), self.status, False),
            Route("GET", re.compile(r"/v1/tiers"), self.tiers, False),
            Route("GET", re.compile(r"/v1/gpus"), self.gpus, False),
            Route("GET", re.compile(r"/v1/runs"), self.runs, False),
            Route("POST", re.compile(r"/v1/runs"), self.submit, True),
            Route("GET", re.compile(r"/v1/runs/([^/]+)"), self.run, False),
            Route("POST", re.compile(r"/v1/runs/([^/]+)/cancel"), self.cancel, True),
            Route("GET", re.compile(r"/v1/runs/([^/]+)/events"), self.events, False),
        ]

    def match(self, method: str, path: str) -> tuple[Route | None, re.Match[str] | None, bool]:
        """``(route, match, path_known)``: a known path with another method is a 405."""
        known = False
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found:
                known = True
                if route.method == method:
                    return route, found, True
        return None, None, known

    # -- read ------------------------------------------------------------------------------------

    def status(self, _m: re.Match[str], _q: Mapping[str, str], _b: Any) -> Reply:
        d = self.daemon
        started = d.started_at
        info = {
            "running": d.running,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": iso(started),
            "uptime_s": round(time.time() - started.timestamp(), 3) if started else None,
            "state_dir": str(d.config.state_dir),
            "host": d.dispatcher.host,
        }
        return Reply(200, status_payload(d.config, d.store, d.next_fire_times(), info))

    def tiers(self, _m: re.Match[str], _q: Mapping[str, str], _b: Any) -> Reply:
        d = self.daemon
        return Reply(200, tier_rows(d.config, d.store, d.next_fire_times()))

    def gpus(self, _m: re.Match[str], _q: Mapping[str, str], _b: Any) -> Reply:
        pool = self.daemon.dispatcher.gpu_pool
        waiting = getattr(pool, "waiting", None)
        queue = [
            {"run_id": run_id, "tier": tier, "priority": prio}
            for run_id, tier, prio in (waiting() if callable(waiting) else [])
        ]
        leases = [
            {k: iso(v) if hasattr(v, "isoformat") else v for k, v in lease.items()}
            for lease in self.daemon.store.active_leases()
        ]
        return Reply(200, {"pool": pool is not None, "leases": leases, "waiting": queue})

    def runs(self, _m: re.Match[str], query: Mapping[str, str], _b: Any) -> Reply:
        tier = query.get("tier") or None
        if tier:
            self.daemon.config.tier(tier)
        limit_text = query.get("limit", "20")
        if not _DECIMAL.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer in 1..{MAX_LIMIT}, got {limit_text!r}")
        records = self.daemon.store.list_runs(tier=tier, limit=int(limit_text))
        return Reply(200, [r.to_json() for r in records])

    def run(self, match: re.Match[str], _q: Mapping[str, str], _b: Any) -> Reply:
        return Reply(200, self.daemon.store.get_run(run_id(match)).to_json())

    def events(self, match: re.Match[str], _q: Mapping[str, str], _b: Any) -> Stream:
        record = self.daemon.store.get_run(run_id(match))
        return Stream(self._follow(record.id))

    def _follow(self, run_id: int) -> Iterator[dict[str, Any]]:
        """The run row, then each results line as the plugin writes it, then the summary."""
        store = self.daemon.store
        record = store.get_run(run_id)
        yield {"type": "run", "run": record.to_json()}
        tail = _LineTail()
        last_beat = time.monotonic()
        while True:
            record = store.get_run(run_id)
            if record.run_dir:
                yield from tail.read(Path(record.run_dir) / RESULTS_FILE)
            if record.outcome.is_final:
                yield {"type": "finished", "run": run_summary(record)}
                return
            if self.stopping.wait(STREAM_POLL_S):
                yield {"type": "closing", "reason": "the daemon's API is shutting down"}
                return
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                yield {"type": "heartbeat", "outcome": record.outcome.value}

    # -- change ----------------------------------------------------------------------------------

    def submit(self, _m: re.Match[str], _q: Mapping[str, str], body: Any) -> Reply:
        wish = _parse(SubmitBody, body)
        tier = self.daemon.config.tier(wish.tier)
        if wish.timeout_s is not None and wish.timeout_s > tier.timeout:
            raise BadRequest(
                f"timeout_s: {wish.timeout_s:g} is longer than tier {wish.tier!r}'s "
                f"timeout ({tier.timeout:g} s); a request may only shorten it"
            )
        request = RunRequest(
            tier=wish.tier,
            trigger=wish.trigger,
            ref=wish.ref,
            markers=wish.markers,
            timeout_s=wish.timeout_s,
        )
        run_id = self.daemon.submit(request)
        record = self.daemon.store.get_run(run_id)
        return Reply(
            202,
            {
                "run_id": run_id,
                "tier": record.tier,
                "trigger": record.trigger,
                "outcome": record.outcome.value,
                "reason": record.reason,
                "pid": os.getpid(),
            },
        )

    def cancel(self, match: re.Match[str], _q: Mapping[str, str], body: Any) -> Reply:
        wish = _parse(CancelBody, body or {})
        number = run_id(match)
        record = self.daemon.store.get_run(number)
        if record.outcome.is_final or not self.daemon.dispatcher.cancel(number, wish.reason):
            raise Conflict(f"run {number} is not running in this daemon ({record.outcome.value})")
        return Reply(202, {"run_id": number, "cancelling": True, "reason": wish.reason})


_DECIMAL = re.compile(r"[0-9]{1,19}")
MAX_RUN_ID = 2**63 - 1


def run_id(match: re.Match[str]) -> int:
    """The run id of a path: ASCII digits that fit SQLite's integer, else a 400."""
    text = match.group(1)
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_RUN_ID:
        raise BadRequest(f"run id must be a positive integer, got {text[:40]!r}")
    return int(text)


def _parse(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object as the request body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: "
            + ("unknown field" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors()
        ]
        raise BadRequest("; ".join(problems)) from None


class _LineTail:
    """Complete JSON lines appended to a file since the last read."""

    def __init__(self) -> None:
        self.offset = 0
        self.buffer = b""

    def read(self, path: Path) -> Iterator[dict[str, Any]]:
        try:
            with path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        # A NUL is the allocated, not yet written rest of a file the results plugin writes
        # through a shared mapping: stop there and read it again next time.
        chunk = chunk.split(b"\0", 1)[0]
        self.offset += len(chunk)
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value
