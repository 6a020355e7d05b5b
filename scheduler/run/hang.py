"""Evidence from a hung pytest run: every process's Python stacks and its GPUs, before the kill.

The results plugin registers :mod:`faulthandler` on ``SIGUSR1`` in each process that loads it
(``$SCHEDCTL_STACKS_DIR/stacks-<pid>.txt``). On a timeout or silence the runner applies
:func:`hang_pre_stop`: the supervisor first saves an NVML snapshot of the run's GPUs (``collect``),
then a stdlib-only command beside the run signals exactly the processes that registered -- those
whose environment names this run's stacks directory, so a pid reused by a stranger is left alone
-- and the runner waits for the dumps (until every registered process has written its stacks, at
most ``STACKS_WAIT_S``) before it stops the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runners.base import PreStop

__all__ = ["GPU_SNAPSHOT_FILE", "STACKS_DIR", "hang_evidence", "hang_pre_stop"]

STACKS_DIR = "stacks"
GPU_SNAPSHOT_FILE = "gpu-snapshot.json"
STACKS_WAIT_S = 3.0

_SIGNAL_SCRIPT = """
import os, signal, sys
directory = sys.argv[1]
mark = ("SCHEDCTL_STACKS_DIR=" + directory).encode()
for name in sorted(os.listdir(directory)):
    if not (name.startswith("stacks-") and name.endswith(".txt")):
        continue
    try:
        pid = int(name[len("stacks-"):-len(".txt")])
        with open("/proc/%d/environ" % pid, "rb") as fh:
            if mark not in fh.read().split(b"\\0"):
                continue
        os.kill(pid, signal.SIGUSR1)
        print("stacks requested from pid %d" % pid)
    except (ValueError, OSError):
        pass
"""


def hang_pre_stop(
    python: str, stacks_dir: Path, collect: Callable[[], None] | None = None
) -> PreStop:
    """Ask every registered pytest process of the run for its stacks (and ``collect`` first)."""
    return PreStop(
        command=(python, "-c", _SIGNAL_SCRIPT, str(stacks_dir)),
        wait_s=STACKS_WAIT_S,
        collect=collect,
        ready=lambda: stacks_dumped(stacks_dir),
    )


def stacks_dumped(stacks_dir: Path) -> bool:
    """Every registered process has written its stacks (its file is no longer empty).

    A process that exited before the hang leaves an empty file: then the wait runs its course.
    """
    try:
        files = list(stacks_dir.glob("stacks-*.txt"))
        return bool(files) and all(f.stat().st_size > 0 for f in files)
    except OSError:
        return False


def gpu_snapshot_writer(
    snapshot: Callable[[], dict[str, Any]] | None, run_dir: Path
) -> Callable[[], None] | None:
    """``collect`` for :func:`hang_pre_stop`: the run's GPUs as JSON in the run dir."""
    if snapshot is None:
        return None

    def write() -> None:
        try:
            data = snapshot()
        except Exception as exc:  # a hung or absent driver is part of the evidence
            data = {"error": f"{type(exc).__name__}: {exc}"}
        (run_dir / GPU_SNAPSHOT_FILE).write_text(json.dumps(data, indent=2, default=str))

    return write


def hang_evidence(run_dir: Path) -> dict[str, Any]:
    """What a hung run left: the non-empty stacks files and the GPU snapshot, as paths."""
    stacks = sorted(
        str(p) for p in (run_dir / STACKS_DIR).glob("stacks-*.txt") if p.stat().st_size > 0
    )
    evidence: dict[str, Any] = {"stacks": stacks}
    snapshot = run_dir / GPU_SNAPSHOT_FILE
    if snapshot.exists():
        evidence["gpu_snapshot"] = str(snapshot)
    return evidence
