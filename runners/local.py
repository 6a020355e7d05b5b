"""Run the command as a local subprocess in its own process group.

Plugin alias: local. On timeout or cancel the whole group gets SIGTERM, then SIGKILL after the
grace. Processes that left the group (``setsid``, daemonised helpers) are found by a token in
their environment and killed too, so no orphan survives a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from runners.base import BoundedLog, Runner, RunResult, RunSpec
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

TOKEN_ENV = "SCHEDCTL_RUN_TOKEN"


class LocalRunner(Runner):
    """Subprocess runner. Plugin alias: local."""

    alias = "local"

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.proc_root = proc_root

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        token = uuid.uuid4().hex
        # Exactly the leased GPUs, and none when nothing is leased: a run never touches a GPU
        # that another run (or a person's training job) holds.
        env = {
            **spec.env,
            TOKEN_ENV: token,
            "CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in spec.gpus),
        }
        oom_before = self._oom_kills()
        started = utcnow()
        with BoundedLog(spec.log_path, spec.log_limit_bytes) as log:
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    cwd=spec.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise InfraError(f"cannot start {spec.argv[0]!r} in {spec.workdir}: {exc}") from exc
            pump = threading.Thread(target=_pump, args=(proc, log), daemon=True)
            pump.start()
            termination, message = self._supervise(proc, spec, cancel)
            self._kill_group(proc.pid, signal.SIGKILL)
            self._kill_stragglers(token)
            pump.join(timeout=5)
            truncated = log.truncated
        code = proc.returncode
        killed = termination is Termination.EXITED and code == -signal.SIGKILL
        if killed and self._oom_kills() > oom_before:
            termination, message = Termination.OOM, "killed by the kernel OOM killer"
        return RunResult(
            termination, code, started, utcnow(), message, truncated, {"pid": proc.pid}
        )

    def _supervise(
        self, proc: subprocess.Popen[bytes], spec: RunSpec, cancel: threading.Event
    ) -> tuple[Termination, str]:
        deadline = time.monotonic() + spec.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(0.0, min(0.1, remaining)))
                return Termination.EXITED, ""
            except subprocess.TimeoutExpired:
                pass
            if cancel.is_set():
                self._stop(proc, spec.grace_s)
                return Termination.CANCELLED, "cancelled"
            if time.monotonic() >= deadline:
                self._stop(proc, spec.grace_s)
                return Termination.TIMEOUT, f"timed out after {spec.timeout_s:g}s"

    def _stop(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        self._kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._kill_group(proc.pid, signal.SIGKILL)
            proc.wait()

    @staticmethod
    def _kill_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _kill_stragglers(self, token: str) -> None:
        needle = f"{TOKEN_ENV}={token}".encode()
        for _ in range(3):
            found = [pid for pid, env in process_environs(self.proc_root) if needle in env]
            if not found:
                return
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _oom_kills(self) -> int:
        """System-wide OOM kill counter (Linux >= 4.13); 0 where unknown."""
        try:
            for line in (self.proc_root / "vmstat").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


def process_environs(proc_root: Path = Path("/proc")) -> Iterator[tuple[int, bytes]]:
    """``(pid, environ bytes)`` of every process we may read, except our own."""
    me = os.getpid()
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            yield int(entry.name), (entry / "environ").read_bytes()
        except OSError:
            continue


def _pump(proc: subprocess.Popen[bytes], log: BoundedLog) -> None:
    stream = proc.stdout
    assert stream is not None
    while chunk := os.read(stream.fileno(), 65536):
        log.write(chunk)
