"""Find and kill local-runner processes that outlived the daemon that started them.

A SIGKILLed daemon kills nobody: the local runner starts each run in its own session, so its
pytest and everything pytest forked live on. Every such process carries the run's results path
(``SCHEDCTL_RESULTS=<runs_dir>/<run id>/results.jsonl``) in its environment, which names both the
state directory and the run, so recovery can find exactly the processes of one state dir's dead
runs, even ones that called ``setsid`` or double-forked.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from runners.local import process_environs

RESULTS_ENV = b"SCHEDCTL_RESULTS="


def run_processes(runs_dir: Path, proc_root: Path = Path("/proc")) -> dict[int, set[int]]:
    """Map run id -> pids of live processes whose environment ties them to ``runs_dir``."""
    forms = {str(runs_dir).rstrip("/"), str(runs_dir.resolve()).rstrip("/")}
    alternatives = b"|".join(re.escape(f.encode()) for f in sorted(forms))
    pattern = re.compile(rb"(?:^|\0)" + RESULTS_ENV + rb"(?:" + alternatives + rb")/(\d+)/")
    found: dict[int, set[int]] = {}
    for pid, environ in process_environs(proc_root):
        match = pattern.search(environ)
        if match:
            found.setdefault(int(match.group(1)), set()).add(pid)
    return found


def kill_orphan_processes(
    runs_dir: Path, live_run_ids: Iterable[int], proc_root: Path = Path("/proc")
) -> set[int]:
    """SIGKILL the processes of every run not in ``live_run_ids``; returns the runs reaped.

    Repeats a few times because a dying process tree may still be forking.
    """
    live = set(live_run_ids)
    reaped: set[int] = set()
    for _ in range(5):
        orphans = {
            r: pids for r, pids in run_processes(runs_dir, proc_root).items() if r not in live
        }
        if not orphans:
            break
        for run_id, pids in orphans.items():
            reaped.add(run_id)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return reaped


def started_by_run(
    pid: int, run_dir: Path, container_ids: Iterable[str] = (), proc_root: Path = Path("/proc")
) -> bool:
    """Whether ``pid`` belongs to a run: its run dir in the environment (local runs), or one of
    the run's container ids in its cgroup (container runs; NVML reports host pids)."""
    try:
        environ = (proc_root / str(pid) / "environ").read_bytes()
    except OSError:
        environ = b""
    forms = {str(run_dir).rstrip("/"), str(run_dir.resolve()).rstrip("/")}
    if any(RESULTS_ENV + f.encode() + b"/" in environ for f in forms):
        return True
    try:
        cgroup = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return False
    return any(cid and cid in cgroup for cid in container_ids)
