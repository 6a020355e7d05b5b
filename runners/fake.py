"""A runner that runs nothing: ``FakeRunner(handler)`` maps a spec to a scripted behaviour.

Plugin alias: fake. Like httpx's ``MockTransport``, it ships with the package so scheduler,
alert and metrics tests (and demos) can drive whole runs without processes or containers. It
honours the same contract as the real runners: timeout, cancel, bounded log, results file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runners.base import BoundedLog, Runner, RunResult, RunSpec
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


Handler = Callable[[RunSpec], FakeBehaviour]


def always(behaviour: FakeBehaviour) -> Handler:
    return lambda _spec: behaviour


class FakeRunner(Runner):
    """Scripted runner for tests. Plugin alias: fake."""

    alias = "fake"

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler or always(FakeBehaviour(tests=[("test_fake.py::test_ok", "passed")]))
        self.specs: list[RunSpec] = []

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        self.specs.append(spec)
        behaviour = self.handler(spec)
        started = utcnow()
        if behaviour.termination is Termination.INFRA:
            return RunResult(Termination.INFRA, None, started, utcnow(), message=behaviour.message)
        with BoundedLog(spec.log_path, spec.log_limit_bytes) as log:
            log.write(behaviour.log)
            self._write_results(spec, behaviour)
            interrupted = cancel.wait(min(behaviour.duration_s, spec.timeout_s))
            truncated = log.truncated
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

    @staticmethod
    def _write_results(spec: RunSpec, behaviour: FakeBehaviour) -> None:
        with spec.results_path.open("a") as fh:
            fh.write(
                json.dumps(
                    {"type": "collection", "collected": len(behaviour.tests), "ts": time.time()}
                )
                + "\n"
            )
            for nodeid, outcome in behaviour.tests:
                fh.write(
                    json.dumps(
                        {
                            "type": "test",
                            "nodeid": nodeid,
                            "outcome": outcome,
                            "duration_s": 0.001,
                            "markers": [],
                            "longrepr": None,
                            "ts": time.time(),
                        }
                    )
                    + "\n"
                )
