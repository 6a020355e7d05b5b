"""The torchrun distributed smoketest: the DDP program, its launches through a runner, the verdict.

``python -m scheduler.smoketest`` is the built-in DDP program (:mod:`.train`, the only module that
imports torch). The scheduler calls :func:`run_smoketest` for a ``kind: torchrun`` tier and stores
the :class:`Verdict`; ``schedctl show`` prints it with :func:`format_table`.
"""

from __future__ import annotations

from scheduler.smoketest.compare import Verdict, compare, format_table
from scheduler.smoketest.evidence import TorchrunResult, read_summary
from scheduler.smoketest.launch import (
    SmoketestOutcome,
    build_torchrun_argv,
    resolve_backend,
    resolve_nproc,
    run_smoketest,
    smoketest_env,
)

__all__ = [
    "SmoketestOutcome",
    "TorchrunResult",
    "Verdict",
    "build_torchrun_argv",
    "compare",
    "format_table",
    "read_summary",
    "resolve_backend",
    "resolve_nproc",
    "run_smoketest",
    "smoketest_env",
]
