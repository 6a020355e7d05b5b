"""Tier kinds: how a run of each ``kind`` is prepared, executed and turned into a ``RunEnding``.

The dispatcher does the same for every kind (record, source, GPUs, ledger); what differs lives in
one strategy per kind: :mod:`.pytest`, :mod:`.torchrun`, :mod:`.build` and :mod:`.review`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runners.base import GpuDevice, Runner
from scheduler.config import Config, TierConfig
from scheduler.kernel.outcome import RunEnding
from scheduler.run.ledger import Evidence


@dataclass(frozen=True)
class RunContext:
    """Everything a kind needs for one run, resolved by the dispatcher."""

    config: Config
    tier_name: str
    tier: TierConfig
    run_id: int
    runner: Runner
    workdir: Path
    run_dir: Path
    devices: Sequence[GpuDevice]
    host: str
    markers: str | None = None
    timeout_s: float | None = None
    gpu_snapshot: Callable[[], dict[str, Any]] | None = None
    """The run's GPUs as JSON, for hang evidence (``None``: no GPUs leased)."""
    quarantine: Callable[[], frozenset[str]] = frozenset
    """Reads the node ids under an unexpired quarantine (see :attr:`quarantined`)."""

    @property
    def quarantined(self) -> frozenset[str]:
        """Node ids under an unexpired quarantine, read when asked: a kind asks once its run
        has started, so the read is off a cron fire's way to ``RunStarted``."""
        return self.quarantine()

    @property
    def effective_timeout_s(self) -> float:
        return self.tier.timeout if self.timeout_s is None else self.timeout_s


@dataclass(frozen=True)
class Finished:
    """A kind's run, done: how it ended and the evidence for the ledger."""

    ending: RunEnding
    evidence: Evidence


@dataclass(frozen=True)
class Prepared:
    """A run ready to start: what the ledger records as it starts, and how to run it."""

    provenance: Mapping[str, Any]
    """runner, argv, image: written on the row when the run starts."""
    execute: Callable[[threading.Event], Finished] = field(repr=False)


class TierKind(Protocol):
    name: str

    def prepare(self, ctx: RunContext) -> Prepared: ...


def kind_for(name: str) -> TierKind:
    """The strategy for ``name``; only its module is imported (``build`` needs the docker SDK)."""
    if name == "pytest":
        from scheduler.run.kinds.pytest import PytestKind

        return PytestKind()
    if name == "torchrun":
        from scheduler.run.kinds.torchrun import TorchrunKind

        return TorchrunKind()
    if name == "build":
        from scheduler.run.kinds.build import BuildKind

        return BuildKind()
    if name == "review":
        from scheduler.run.kinds.review import ReviewKind

        return ReviewKind()
    raise KeyError(name)
