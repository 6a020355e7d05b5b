"""Fixtures for the GPU package: fake GPU files and run rows (``store`` comes from tests/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.gpu import FakeProbe, write_fake_gpus
from scheduler.store.engine import Store
from tests.scheduler.gpu.gpu_helpers import gpu


@pytest.fixture
def gpu_file(tmp_path: Path) -> Path:
    """Path of a fake GPU file holding two idle GPUs."""
    path = tmp_path / "gpus.json"
    write_fake_gpus(path, [gpu(0), gpu(1)])
    return path


@pytest.fixture
def probe(gpu_file: Path) -> FakeProbe:
    """A fake probe reading ``gpu_file``."""
    return FakeProbe(gpu_file)


@pytest.fixture
def new_run(store: Store) -> Callable[..., int]:
    """Insert a running run row and return its id (leases reference run rows).

    Each row gets its own tier name: the store allows one active run per tier, and the pool
    tests need several at once (the lease's tier is the one passed to ``acquire``).
    """
    made = iter(range(1_000_000))

    def make(tier: str = "hourly") -> int:
        run_id = store.create_run(tier=f"{tier}-{next(made)}", trigger="manual", outcome="running")
        assert run_id is not None
        return run_id

    return make
