"""The runner contract: ``RunSpec`` in, ``RunResult`` out.

Errors a runner raises are the kernel's ``RunnerError`` tree (:mod:`scheduler.kernel.errors`).
Everything that happens *after* the process started (non-zero exit, timeout, OOM kill, cancel) is
not an exception: it is reported in :class:`RunResult.termination`.
"""

from __future__ import annotations

import abc
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

PLUGIN_MODULE = "schedctl_results"
"""Name under which :mod:`runners.pytest_plugin` is loaded (``-p schedctl_results``)."""

RESULTS_FILE = "results.jsonl"
JUNIT_FILE = "junit.xml"
LOG_FILE = "output.log"


@dataclass(frozen=True)
class GpuDevice:
    """One leased GPU as a runner needs it."""

    index: int
    uuid: str


@dataclass(frozen=True)
class RunSpec:
    """Everything a runner needs to execute one run; built by the dispatcher.

    ``argv`` is the command to run inside ``workdir`` (for pytest it already carries ``-p`` for the
    results plugin). ``run_dir`` is writable and receives the log, results and JUnit files.
    """

    run_id: str
    tier: str
    argv: Sequence[str]
    workdir: Path
    run_dir: Path
    timeout_s: float
    env: Mapping[str, str] = field(default_factory=dict)
    plugin_dir: Path | None = None
    grace_s: float = 10.0
    log_limit_bytes: int = 10 * 1024 * 1024
    gpus: Sequence[GpuDevice] = ()
    image: str | None = None
    memory: str | None = None
    shm_size: str | None = None
    network: bool = False
    pids_limit: int = 4096
    labels: Mapping[str, str] = field(default_factory=dict)
    # Options only container runners act on (the local runner sees host paths and has no box):
    mounts: Mapping[Path, str] = field(default_factory=dict)
    """Extra read-only binds, host path -> absolute container path; argv/env naming them remap."""
    pre_stop_exec: Sequence[str] = ()
    """Run inside the container before a timeout or silence stop, to keep evidence (e.g. make
    the workers dump their stacks); its output goes to the log; bounded by ``grace_s``."""
    silence_timeout_s: float | None = None
    """A run that writes no output for this long ends as a timeout (None: only ``timeout_s``)."""

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    @property
    def junit_path(self) -> Path:
        return self.run_dir / JUNIT_FILE


@dataclass(frozen=True)
class RunResult:
    """What a runner observed. Interpreting it into an ``Outcome`` is the scheduler's job."""

    termination: Termination
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    message: str = ""
    log_truncated: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class Runner(abc.ABC):
    """Base class of every runner backend.

    The public :meth:`run` prepares the run directory, times the run and turns an
    :class:`InfraError` into a result; backends implement only :meth:`_execute`.
    """

    alias: ClassVar[str]

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        cancel = cancel or threading.Event()
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        started = utcnow()
        try:
            return self._execute(spec, cancel)
        except InfraError as exc:
            return RunResult(Termination.INFRA, None, started, utcnow(), message=str(exc))

    @abc.abstractmethod
    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        """Run ``spec`` to the end, honouring ``spec.timeout_s`` and ``cancel``."""

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Kill what earlier runs left behind; return the run ids whose leftovers were reaped."""
        return []

    def close(self) -> None:
        """Release engine connections."""


def install_plugin(target_dir: Path) -> Path:
    """Copy the results plugin into ``target_dir`` as ``schedctl_results.py`` and return the dir.

    The plugin is copied rather than imported from this package so it loads under any interpreter
    (a project's venv, a container image) that cannot import ``runners``.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).with_name("pytest_plugin.py")
    shutil.copyfile(source, target_dir / f"{PLUGIN_MODULE}.py")
    return target_dir


class BoundedLog:
    """Append-only log file capped at ``limit`` bytes; excess is dropped with one marker line."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self.truncated = False
        self._fh = path.open("ab")

    def write(self, data: bytes) -> None:
        if self.truncated:
            return
        room = self.limit - self.written
        if len(data) > room:
            self._fh.write(data[: max(room, 0)])
            self._fh.write(f"\n[schedctl: log truncated at {self.limit} bytes]\n".encode())
            self.truncated = True
            self.written = self.limit
        else:
            self._fh.write(data)
            self.written += len(data)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> BoundedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
