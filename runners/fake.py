"""A runner that runs nothing: ``FakeRunner(handler)`` maps a spec to a scripted behaviour.

Plugin alias: fake. Like httpx's ``MockTransport``, it ships with the package so scheduler,
alert and metrics tests (and demos) can drive whole runs without processes or containers. It
honours the same contract as the real runners: timeout, silence timeout, pre-stop, cancel, bounded
log, results file -- and process ownership by bookkeeping: a behaviour names the pids its run
"started" (:meth:`FakeRunner.owns` answers for them) and whether they outlive the run, until
:meth:`FakeRunner.reap_orphans` forgets them (it signals nothing: the pids may be anyone's).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runners.base import (
    NONCE_ENV,
    PRE_STOP_MARK,
    BoundedLog,
    Runner,
    RunResult,
    RunSpec,
    wants_evidence,
)
from scheduler.kernel.clock import utcnow
from scheduler.kernel.outcome import Termination


@dataclass(frozen=True)
class FakeBehaviour:
    """What the fake should pretend happened."""

    exit_code: int = 0
    tests: Sequence[tuple[str, str]] = ()
    duration_s: float = 0.0
    log: bytes = b""
    termination: Termination = Termination.EXITED
    message: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    pids: Sequence[int] = ()
    """Host pids this run pretends to have started: :meth:`FakeRunner.owns` says they are its
    (also after the run: the fake cannot tell whether they still live)."""
    leaves_orphans: bool = False
    """The run's pids outlive it (as after a crash), until :meth:`FakeRunner.reap_orphans`."""
    pre_stop_log: bytes = b""
    """What the run writes when a :class:`PreStop` reaches it (the stacks a dump would give)."""
    session: bool = True
    """Write the plugin's session records (start, and an end with ``exit_code``); ``False``
    pretends pytest never began (an interpreter without pytest, a plugin that did not load)."""


Handler = Callable[[RunSpec], FakeBehaviour]


def always(behaviour: FakeBehaviour) -> Handler:
    return lambda _spec: behaviour


class FakeRunner(Runner):
    """Scripted runner for tests. Plugin alias: fake."""

    alias = "fake"

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 0.05,
    ) -> None:
        self.handler = handler or always(FakeBehaviour(tests=[("test_fake.py::test_ok", "passed")]))
        self.specs: list[RunSpec] = []
        self._clock = clock
        self.poll_s = poll_s
        self.pre_stopped: list[str] = []
        """Run ids that got their :class:`PreStop` before a timeout, silence or evidence stop."""
        self._lock = threading.Lock()
        self._pids: dict[str, set[int]] = {}
        self._orphaned: set[str] = set()

    def owns(self, pid: int, run_id: str) -> bool:
        with self._lock:
            return pid in self._pids.get(run_id, set())

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        with self._lock:
            reaped = sorted(self._orphaned - live_run_ids)
            for run_id in reaped:
                self._orphaned.discard(run_id)
                self._pids.pop(run_id, None)
        return reaped

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        self.specs.append(spec)
        behaviour = self.handler(spec)
        started = utcnow()
        if behaviour.termination is Termination.INFRA:
            return RunResult(Termination.INFRA, None, started, utcnow(), message=behaviour.message)
        with self._lock:
            self._pids.setdefault(spec.run_id, set()).update(behaviour.pids)
            if behaviour.leaves_orphans:
                self._orphaned.add(spec.run_id)
        with BoundedLog(spec.log_path, spec.log_limit_bytes) as log:
            # The clock starts before the log is written: a test that sees the log and moves
            # the clock on must find the run already counting.
            began = self._clock()
            log.write(behaviour.log)
            self._write_results(spec, behaviour)
            # The log is written at once, so the run is silent from the start.
            silence = spec.silence_timeout_s
            stop_at = min(behaviour.duration_s, spec.timeout_s, silence or spec.timeout_s)
            interrupted = self._wait(cancel, began + stop_at)
            stopped = not interrupted and behaviour.duration_s > stop_at
            evidence = stopped or (interrupted and wants_evidence(cancel))
            if evidence and spec.pre_stop is not None:
                self.pre_stopped.append(spec.run_id)
                log.write(f"\n{PRE_STOP_MARK} scripted]\n".encode() + behaviour.pre_stop_log)
            truncated = log.truncated
        if stopped and silence is not None and stop_at == silence < spec.timeout_s:
            return RunResult(
                Termination.TIMEOUT,
                None,
                started,
                utcnow(),
                f"no output for {silence:.0f}s (silence timeout)",
                truncated,
                behaviour.provenance,
            )
        if interrupted:
            return RunResult(
                Termination.CANCELLED,
                None,
                started,
                utcnow(),
                "cancelled",
                truncated,
                behaviour.provenance,
            )
        if behaviour.duration_s > spec.timeout_s:
            return RunResult(
                Termination.TIMEOUT,
                None,
                started,
                utcnow(),
                f"timed out after {spec.timeout_s:g}s",
                truncated,
                behaviour.provenance,
            )
        return RunResult(
            behaviour.termination,
            behaviour.exit_code,
            started,
            utcnow(),
            behaviour.message,
            truncated,
            behaviour.provenance,
        )

    def _wait(self, cancel: threading.Event, end: float) -> bool:
        """Wait until ``end`` on the (injectable) clock, as the real runners do; if cancelled."""
        while (left := end - self._clock()) > 0:
            if cancel.wait(min(self.poll_s, left)):
                return True
        return cancel.is_set()

    @staticmethod
    def _write_results(spec: RunSpec, behaviour: FakeBehaviour) -> None:
        """The lines the real plugin would write, with the run's nonce and matching counts."""
        if not behaviour.session:
            return
        nonce = spec.env.get(NONCE_ENV)
        counts: dict[str, int] = {}
        for _, outcome in behaviour.tests:
            counts[outcome] = counts.get(outcome, 0) + 1
        lines: list[dict[str, Any]] = [
            {"type": "start"},
            {"type": "collection", "collected": len(behaviour.tests)},
            *(
                {"type": "test", "nodeid": nodeid, "outcome": outcome, "duration_s": 0.001,
                 "markers": [], "longrepr": None}
                for nodeid, outcome in behaviour.tests
            ),
            {"type": "session", "exitstatus": behaviour.exit_code, "counts": counts},
        ]  # fmt: skip
        with spec.results_path.open("a") as fh:
            for line in lines:
                stamped = {**line, "ts": time.time(), **({"nonce": nonce} if nonce else {})}
                fh.write(json.dumps(stamped) + "\n")
