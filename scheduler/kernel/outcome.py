"""How a run ended: the one ``Outcome`` enum, and what a runner observed (``Termination``)."""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    """How a run ended; one enum for the store, metrics labels, alerts and exit codes."""

    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    NO_TESTS = "no-tests"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    GPU_UNAVAILABLE = "gpu-unavailable"
    INFRA_ERROR = "infra-error"
    INTERRUPTED = "interrupted"
    SKIPPED_OVERLAP = "skipped-overlap"
    MISSED = "missed"

    @property
    def is_final(self) -> bool:
        return self not in (Outcome.QUEUED, Outcome.RUNNING)

    @property
    def is_infra(self) -> bool:
        """Outcomes that say nothing about the code under test."""
        return self in INFRA_OUTCOMES

    @property
    def is_test_failure(self) -> bool:
        return self in (
            Outcome.FAILED,
            Outcome.ERROR,
            Outcome.NO_TESTS,
            Outcome.TIMEOUT,
            Outcome.OOM,
        )


INFRA_OUTCOMES = frozenset(
    {
        Outcome.GPU_UNAVAILABLE,
        Outcome.INFRA_ERROR,
        Outcome.INTERRUPTED,
        Outcome.MISSED,
        Outcome.CANCELLED,
        Outcome.SKIPPED_OVERLAP,
    }
)


class Termination(str, enum.Enum):
    """Why the process under test stopped, as the runner saw it."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    INFRA = "infra"
