"""Supervise one local torchrun launch: bounded log, timeouts, stacks before the kill, no leftovers.

The launcher runs in a new session. Every ~0.2 s the supervisor checks for exit, cancel, the
wall-clock deadline and silence (no output for ``silence_timeout_s``). On a timeout or silence it
sends ``SIGUSR1`` to every rank (the built-in program dumps all threads' stacks through
faulthandler), waits ``stack_wait_s``, keeps what the ranks wrote, then sends ``SIGTERM`` to the
whole tree, waits ``grace_s`` and ``SIGKILL``s what is left. A final sweep kills anything still in
a session that the launch created, also after a clean exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.base import BoundedLog
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination
from scheduler.smoketest.procs import ProcessTree, signal_pids

RANK_TAIL_LINES = 20
_POLL_S = 0.2
_SCAN_EVERY_S = 1.0
_DUMP_GAP_S = 0.3


@dataclass(frozen=True)
class TorchrunResult:
    """What one torchrun launch left behind, for the comparison and as evidence."""

    nproc: int
    termination: Termination
    exit_code: int | None
    duration_s: float
    summary: dict[str, Any] | None
    rank_logs: dict[int, list[str]] = field(default_factory=dict)
    stacks: str = ""
    message: str = ""
    log_path: Path | None = None
    log_truncated: bool = False
    sessions: frozenset[int] = frozenset()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """Where it ran, when not here: the container runner's image and container ids."""

    def to_json(self) -> dict[str, Any]:
        extra = {"provenance": dict(self.provenance)} if self.provenance else {}
        return {
            "nproc": self.nproc,
            "termination": self.termination.value,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "summary": self.summary,
            "rank_logs": {str(rank): lines for rank, lines in self.rank_logs.items()},
            "stacks": self.stacks,
            "message": self.message,
            "log_path": str(self.log_path) if self.log_path else None,
            "log_truncated": self.log_truncated,
            **extra,
        }


@dataclass(frozen=True)
class Limits:
    """How long to wait for what; the defaults suit both CPU and GPU runs."""

    timeout_s: float
    silence_timeout_s: float
    grace_s: float = 5.0
    stack_wait_s: float = 2.0
    log_limit_bytes: int = 10 * 1024 * 1024


def run_torchrun(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float,
    silence_timeout_s: float,
    log_path: Path,
    cancel: threading.Event,
    *,
    nproc: int = 0,
    out_path: Path | None = None,
    rank_log_dir: Path | None = None,
    grace_s: float = 5.0,
    stack_wait_s: float = 2.0,
    log_limit_bytes: int = 10 * 1024 * 1024,
) -> TorchrunResult:
    """Run ``argv`` (a torchrun command line) to the end under the limits; never leave a process.

    Raises:
        InfraError: the launcher could not be started at all (missing interpreter, bad cwd).
    """
    limits = Limits(timeout_s, silence_timeout_s, grace_s, stack_wait_s, log_limit_bytes)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with BoundedLog(log_path, limits.log_limit_bytes) as log:
        watch = _Supervision(argv, env, cwd, log, cancel, limits, rank_log_dir)
        termination, message = watch.run()
    return TorchrunResult(
        nproc=nproc,
        termination=termination,
        exit_code=watch.returncode,
        duration_s=watch.duration_s,
        summary=read_summary(out_path) if out_path else None,
        rank_logs=rank_tails(rank_log_dir) if rank_log_dir else {},
        stacks=watch.stacks,
        message=message,
        log_path=log_path,
        log_truncated=log.truncated,
        sessions=frozenset(watch.tree.sessions) if watch.tree else frozenset(),
    )


class _Supervision:
    """One launch, from ``Popen`` to the last sweep."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log: BoundedLog,
        cancel: threading.Event,
        limits: Limits,
        rank_log_dir: Path | None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self.cancel = cancel
        self.limits = limits
        self.rank_log_dir = rank_log_dir
        self.tree: ProcessTree | None = None
        self.returncode: int | None = None
        self.duration_s = 0.0
        self.stacks = ""
        self._last_output = time.monotonic()
        self._console: deque[bytes] = deque(maxlen=4096)
        self._lock = threading.Lock()

    def run(self) -> tuple[Termination, str]:
        started = time.monotonic()
        proc = self._spawn()
        self.tree = ProcessTree(proc.pid)
        assert proc.stdout is not None
        reader = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            termination, message = self._watch(proc, started)
        finally:
            self._sweep(proc)
            reader.join(timeout=5)
            proc.stdout.close()
            self.duration_s = time.monotonic() - started
        return termination, message

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise InfraError(f"cannot start torchrun ({self.argv[0]}): {exc}") from exc

    def _pump(self, stream: Any) -> None:
        fd = stream.fileno()
        while chunk := os.read(fd, 65536):
            with self._lock:
                self._last_output = time.monotonic()
                self._console.append(chunk)
            self.log.write(chunk)

    def _watch(self, proc: subprocess.Popen[bytes], started: float) -> tuple[Termination, str]:
        assert self.tree is not None
        deadline = started + self.limits.timeout_s
        next_scan = 0.0
        while True:
            try:
                self.returncode = proc.wait(timeout=_POLL_S)
                return Termination.EXITED, exit_message(self.returncode)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now >= next_scan:
                self.tree.refresh()
                next_scan = now + _SCAN_EVERY_S
            if self.cancel.is_set():
                self._stop(proc)
                return Termination.CANCELLED, "cancelled"
            with self._lock:
                silent_for = now - self._last_output
            if now >= deadline:
                return self._hung(proc, f"timed out after {self.limits.timeout_s:g} s")
            if silent_for >= self.limits.silence_timeout_s:
                return self._hung(proc, f"no output for {silent_for:.0f} s (silence timeout)")

    def _hung(self, proc: subprocess.Popen[bytes], why: str) -> tuple[Termination, str]:
        self.stacks = self._capture_stacks()
        self._stop(proc)
        return Termination.TIMEOUT, why + ("; Python stacks captured" if self.stacks else "")

    def _capture_stacks(self) -> str:
        """SIGUSR1 the ranks (faulthandler dumps to their stderr) and keep what they write."""
        assert self.tree is not None
        files = _rank_stderr_files(self.rank_log_dir) if self.rank_log_dir else {}
        offsets = {rank: _size(path) for rank, path in files.items()}
        with self._lock:
            console_mark = len(self._console)
        workers = self.tree.workers()
        for pid in workers:
            signal_pids([pid], signal.SIGUSR1)
            if not files:  # one shared console: keep the ranks' dumps from interleaving
                time.sleep(_DUMP_GAP_S)
        time.sleep(self.limits.stack_wait_s)
        parts = [
            f"--- rank {rank} (stderr after SIGUSR1) ---\n{_read_from(path, offsets[rank])}"
            for rank, path in sorted(files.items())
        ]
        if not files:
            with self._lock:
                tail = b"".join(list(self._console)[console_mark:])
            parts.append(
                f"--- console after SIGUSR1 to pids {workers} ---\n"
                + tail.decode("utf-8", "replace")
            )
        return "\n".join(parts)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the whole tree, wait ``grace_s``, then SIGKILL whatever is left."""
        assert self.tree is not None
        self.tree.refresh()
        self.tree.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.limits.grace_s
        while time.monotonic() < deadline and (proc.poll() is None or self.tree.members()):
            time.sleep(_POLL_S)
        self.returncode = self._kill_rest(proc)

    def _sweep(self, proc: subprocess.Popen[bytes]) -> None:
        """Whatever the ending, nothing from this launch survives it."""
        if self.tree is not None:
            code = self._kill_rest(proc)
            if self.returncode is None:
                self.returncode = code

    def _kill_rest(self, proc: subprocess.Popen[bytes]) -> int | None:
        assert self.tree is not None
        for _ in range(10):
            if not self.tree.signal_all(signal.SIGKILL) and proc.poll() is not None:
                break
            time.sleep(0.1)
        try:
            return proc.wait(timeout=self.limits.grace_s)
        except subprocess.TimeoutExpired:
            return None


def exit_message(code: int) -> str:
    if code == 0:
        return "exited 0"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited {code}"


def read_summary(out_path: Path) -> dict[str, Any] | None:
    """The last ``{"type": "summary"}`` line of a JSON-lines file, or ``None``."""
    try:
        lines = out_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") == "summary":
            return record
    return None


def rank_tails(rank_log_dir: Path, lines: int = RANK_TAIL_LINES) -> dict[int, list[str]]:
    """Last ``lines`` lines of each rank's stdout and stderr (torchrun ``--log-dir`` layout)."""
    tails: dict[int, list[str]] = {}
    for stream in ("stdout", "stderr"):
        for rank, path in _rank_files(rank_log_dir, stream).items():
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            tails.setdefault(rank, []).extend(f"[{stream}] {line}" for line in text[-lines:])
    return dict(sorted(tails.items()))


def _rank_stderr_files(rank_log_dir: Path) -> dict[int, Path]:
    return _rank_files(rank_log_dir, "stderr")


def _rank_files(rank_log_dir: Path, stream: str) -> dict[int, Path]:
    """torchrun writes ``<log_dir>/<run_id>/attempt_<k>/<local_rank>/<stream>.log``."""
    found: dict[int, Path] = {}
    for path in sorted(rank_log_dir.glob(f"*/attempt_*/*/{stream}.log")):
        if path.parent.name.isdigit():
            found[int(path.parent.name)] = path  # the latest attempt sorts last
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int, limit: int = 256 * 1024) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
