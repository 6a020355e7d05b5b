"""Local runner specifics: process groups, escaped processes, start failures, OOM detection."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.base import RunSpec
from runners.local import LocalRunner, _exit_poller
from scheduler.kernel.outcome import Termination


def spec_for(tmp_path: Path, code: str, **kw: object) -> RunSpec:
    script = tmp_path / "main.py"
    script.write_text(code)
    base: dict[str, object] = {
        "run_id": "1",
        "tier": "t",
        "argv": [sys.executable, str(script)],
        "workdir": tmp_path,
        "run_dir": tmp_path / "run",
        "timeout_s": 30.0,
        "env": {"PATH": os.environ["PATH"]},
        "grace_s": 1.0,
    }
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[1].split()[0] != "Z"


def test_children_and_escaped_processes_are_killed(tmp_path: Path) -> None:
    """A grandchild in the group and a setsid() escapee both die when the run ends."""
    pids = tmp_path / "pids"
    code = f"""
import os, subprocess, sys, time
a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open({str(pids)!r}, "w").write(f"{{a.pid}} {{b.pid}}")
time.sleep(600)
"""
    result = LocalRunner().run(spec_for(tmp_path, code, timeout_s=2.0))
    assert result.termination is Termination.TIMEOUT
    child, escapee = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(child) or alive(escapee)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child) and not alive(escapee)


def test_background_leftover_after_normal_exit_is_killed(tmp_path: Path) -> None:
    """A process a test leaves running after a normal exit does not outlive the run."""
    pids = tmp_path / "pids"
    code = f"""
import subprocess, sys
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open({str(pids)!r}, "w").write(str(p.pid))
"""
    result = LocalRunner().run(spec_for(tmp_path, code))
    assert (result.termination, result.exit_code) == (Termination.EXITED, 0)
    leftover = int(pids.read_text())
    deadline = time.monotonic() + 5
    while alive(leftover) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(leftover)


def test_missing_executable_is_infra(tmp_path: Path) -> None:
    """A command that cannot start is an INFRA termination naming it."""
    result = LocalRunner().run(spec_for(tmp_path, "", argv=["/nonexistent/python3", "x"]))
    assert result.termination is Termination.INFRA
    assert "/nonexistent/python3" in result.message


def test_sigkill_with_oom_counter_increase_is_oom(tmp_path: Path) -> None:
    """SIGKILL while the kernel's oom_kill counter rose is reported as OOM."""
    proc = tmp_path / "proc"
    proc.mkdir()
    vmstat = proc / "vmstat"
    vmstat.write_text("oom_kill 3\n")
    code = f"""
import os, signal
open({str(vmstat)!r}, "w").write("oom_kill 4\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = LocalRunner(proc_root=proc).run(spec_for(tmp_path, code))
    assert result.termination is Termination.OOM


def test_gpus_become_cuda_visible_devices(tmp_path: Path) -> None:
    """Leased GPUs reach a local run as CUDA_VISIBLE_DEVICES (by UUID)."""
    from runners.base import GpuDevice

    out = tmp_path / "cvd"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"
    spec = spec_for(tmp_path, code, gpus=(GpuDevice(1, "GPU-b"), GpuDevice(3, "GPU-d")))
    LocalRunner().run(spec)
    assert out.read_text() == "GPU-b,GPU-d"


def test_no_lease_means_no_visible_gpu(tmp_path: Path) -> None:
    """A run without leased GPUs gets CUDA_VISIBLE_DEVICES empty, even if the tier env sets it."""
    out = tmp_path / "cvd"
    code = f"import os; open({str(out)!r}, 'w').write(repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    env = {"PATH": os.environ["PATH"], "CUDA_VISIBLE_DEVICES": "0,1"}
    LocalRunner().run(spec_for(tmp_path, code, env=env))
    assert out.read_text() == "''"


def test_exit_poller_wakes_when_the_child_exits() -> None:
    """The supervisor's wait ends when the command exits, not at its next polling tick."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    poller = _exit_poller(proc.pid)
    if poller is None:
        proc.kill()
        proc.wait()
        pytest.skip("no pidfd_open on this kernel: the runner falls back to Popen.wait")
    try:
        assert not poller.poll(0)
        assert proc.stdin is not None
        proc.stdin.close()  # the child reads EOF and exits
        assert poller.poll(60_000)
        assert proc.poll() is not None
    finally:
        poller.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
