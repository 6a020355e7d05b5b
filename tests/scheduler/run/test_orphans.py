"""Telling a run's processes from foreign ones: its environment, or its containers' cgroups."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from scheduler.orphans import started_by_run


def test_local_process_is_recognised_by_its_run_dir(tmp_path: Path) -> None:
    """A process carrying the run's SCHEDCTL_RESULTS belongs to it; another run's does not."""
    run_dir = tmp_path / "runs" / "7"
    env = {**os.environ, "SCHEDCTL_RESULTS": f"{run_dir}/results.jsonl"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        time.sleep(0.2)
        assert started_by_run(proc.pid, run_dir)
        assert not started_by_run(proc.pid, tmp_path / "runs" / "70")
        assert not started_by_run(os.getpid(), run_dir)
    finally:
        proc.kill()
        proc.wait()


def test_container_process_is_recognised_by_its_cgroup(tmp_path: Path) -> None:
    """A host pid whose cgroup names one of the run's containers belongs to the run."""
    proc_root = tmp_path / "proc"
    (proc_root / "4242").mkdir(parents=True)
    (proc_root / "4242" / "environ").write_bytes(b"HOME=/tmp\0")
    (proc_root / "4242" / "cgroup").write_text("12:memory:/docker/abc123def\n")
    run_dir = tmp_path / "runs" / "1"
    assert started_by_run(4242, run_dir, ["abc123def"], proc_root)
    assert not started_by_run(4242, run_dir, ["fff999"], proc_root)
    assert not started_by_run(4242, run_dir, [""], proc_root)
    assert not started_by_run(9999, run_dir, ["abc123def"], proc_root)
