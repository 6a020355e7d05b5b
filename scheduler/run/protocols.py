"""Protocols of the pluggable parts the dispatcher talks to (no implementation code here)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from runners.base import GpuDevice


class CheckoutLike(Protocol):
    """A tree at a known commit, ready to be used as a run's workdir."""

    path: Path
    sha: str | None
    ref: str | None

    def provenance(self) -> dict[str, Any]: ...


class SourceLike(Protocol):
    """Resolves refs and hands out per-run trees (see :mod:`scheduler.source`)."""

    def resolve(self, ref: str | None) -> str | None: ...

    def checkout(self, ref: str | None, run_id: str) -> Any: ...

    def release(self, checkout: Any, *, keep: bool) -> None: ...

    def changes_between(self, old_sha: str, new_sha: str, limit: int = 50) -> list[str]: ...


class LeaseLike(Protocol):
    """GPUs held by one run."""

    devices: Sequence[GpuDevice]
    waited_s: float

    def provenance(self) -> dict[str, Any]: ...


class GpuPoolLike(Protocol):
    """Hands out exact GPUs to runs (see :mod:`scheduler.gpu`)."""

    def acquire(
        self,
        run_id: int,
        tier: str,
        count: int | str,
        priority: int,
        wait_s: float,
        cancel: threading.Event,
    ) -> Any: ...

    def release(self, run_id: int) -> None: ...

    def leaked_processes(self, lease: Any, settle_s: float = 2.0) -> list[Any]: ...
