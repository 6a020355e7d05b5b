"""Processes of their own: Python code run in a fresh interpreter with this tree on its path (what
a process imports and how it sets itself up can only be seen from a process that has not
imported the test suite), and the end of a long-running one (a daemon, an engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def python_c(
    code: str, *args: str, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...``; raises when it exits non-zero (its stderr is in the error)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, check=False, cwd=cwd, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"python -c exited {done.returncode}:\n{done.stderr}")
    return done


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL once ``timeout_s`` passed; the exit status (as ``wait``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(10)
