"""The runner contract: ``RunSpec`` in, ``RunResult`` out, and the run's processes owned.

Every backend (``local``, ``docker``, ``fake``) implements, and ``tests/runners/test_contract.py``
checks for each of them:

* :meth:`Runner.run` -- the template method: prepares the run dir, calls the backend's
  ``_execute``, turns an ``InfraError`` into a result. Backends that start processes supervise them
  with :meth:`Runner._supervise`, the one loop that honours ``timeout_s``, ``silence_timeout_s``
  (no output for that long ends the run as a timeout), ``cancel`` and :class:`PreStop` (evidence
  before the kill: a signal to the run's processes, a command beside them, a bounded wait). A
  cancel that is a :class:`StopRequest` asking for evidence (a preemption) gets the PreStop too.
* :meth:`Runner.owns` -- does this host pid belong to that run? Local: the run's tag in the
  process environment; docker: one of the run's containers in its cgroup; fake: its bookkeeping.
* :meth:`Runner.reap_orphans` -- kill what runs that are no longer live left behind (after a
  crash of the process that supervised them) and name those runs.

Errors a runner raises are the kernel's ``RunnerError`` tree (:mod:`scheduler.kernel.errors`).
Everything that happens *after* the process started (non-zero exit, timeout, OOM kill, cancel) is
not an exception: it is reported in :class:`RunResult.termination`.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from signal import Signals
from typing import Any, ClassVar, Protocol

import structlog

from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

log = structlog.get_logger("schedctl.runners")

PLUGIN_MODULE = "schedctl_results"
"""Name under which :mod:`runners.pytest_plugin` is loaded (``-p schedctl_results``): a shim
that imports :data:`PLUGIN_IMPL_MODULE` (see :func:`install_plugin`)."""
PLUGIN_IMPL_MODULE = "schedctl_results_impl"
"""Name of the copy of :mod:`runners.pytest_plugin` the shim imports."""
PLUGIN_SHIM = f'''"""schedctl's results plugin, loaded with ``-p {PLUGIN_MODULE}``: the code is
``{PLUGIN_IMPL_MODULE}`` (runners/pytest_plugin.py), imported as a plain module with its bytecode.
pytest parses and compiles a ``-p`` module itself, whatever its bytecode (assertion rewriting),
which for the whole plugin costs ~30 ms a session.

PYTEST_DONT_REWRITE
"""

from {PLUGIN_IMPL_MODULE} import pytest_configure  # noqa: F401
'''

CATALOG_MODULE = "schedctl_catalog"
"""Name under which :mod:`runners.catalog_plugin` is loaded (``-p schedctl_catalog``)."""
CATALOG_PLUGIN = f"{CATALOG_MODULE}.py"
RESULTS_FILE = "results.jsonl"
JUNIT_FILE = "junit.xml"
LOG_FILE = "output.log"
NONCE_ENV = "SCHEDCTL_NONCE"
"""The per-run secret the results plugin stamps on each line (see runners/pytest_plugin.py)."""
OUTPUT_CHECK_S = 1.0
"""How often the supervisor measures a run's output directory against its limit."""
PRE_STOP_MARK = "[schedctl: pre-stop:"
"""Starts the line a runner writes into the log just before it applies :class:`PreStop`; what the
run wrote after it (stacks, say) is the evidence."""


@dataclass(frozen=True)
class GpuDevice:
    """One leased GPU as a runner needs it."""

    index: int
    uuid: str


class StopRequest(threading.Event):
    """A cancel event that can ask for evidence before the stop.

    ``set()`` (as on a plain :class:`threading.Event`) stops the run at once;
    ``request(evidence=True)`` (a preemption) has the runner apply ``spec.pre_stop`` first, as for
    a timeout, and the run still ends ``CANCELLED``. A plain event never asks for evidence.
    """

    def __init__(self) -> None:
        super().__init__()
        self.evidence = False

    def request(self, *, evidence: bool = False) -> None:
        if evidence:
            self.evidence = True  # before set(): a runner that sees the event set sees the flag
        self.set()


def request_stop(cancel: threading.Event, *, evidence: bool = False) -> None:
    """Set ``cancel``, asking for evidence first where it can carry the request."""
    if isinstance(cancel, StopRequest):
        cancel.request(evidence=evidence)
    else:
        cancel.set()


def wants_evidence(cancel: threading.Event) -> bool:
    """Whether a set ``cancel`` asks for the run's :class:`PreStop` before the stop."""
    return isinstance(cancel, StopRequest) and cancel.evidence


@dataclass(frozen=True)
class PreStop:
    """Evidence before the kill: what a runner does to a run it is about to stop for a timeout,
    silence or a cancel asking for evidence (:class:`StopRequest`; a plain cancel stops at once),
    while its processes still live. Every runner honours each field.

    ``signal`` goes to the child processes of the run's command, one by one, ``stagger_s`` apart
    (so that dumps written to one shared console do not interleave) -- not to the command itself
    (torchrun's launcher would die of an unhandled ``SIGUSR1`` before its ranks dumped), nor to
    the children's own children (a data-loader worker without a handler would just die). In a
    container the command is the init's child. ``command`` runs beside the run (docker: inside
    the container, host paths remapped; local: on the host in ``workdir`` with the run's
    environment and tag); its output goes to the log. Each step is bounded by the run's
    ``grace_s``. Then the runner waits up to ``wait_s`` for the evidence to reach the log, and
    stops the run however it went.
    """

    signal: Signals | None = None
    command: Sequence[str] = ()
    wait_s: float = 2.0
    stagger_s: float = 0.0
    collect: Callable[[], None] | None = field(default=None, compare=False)
    """Evidence the supervisor itself gathers first (an NVML snapshot of the run's GPUs); it must
    bound its own time and not raise (an exception is written to the log and ignored)."""
    ready: Callable[[], bool] | None = field(default=None, compare=False)
    """Whether the evidence is complete: the wait ends early when it says so (``None``: wait the
    whole ``wait_s`` unless the run exits first). Polled at the supervisor's tick."""


@dataclass(frozen=True)
class BatchRequest:
    """What a batch-scheduler runner (Slurm) asks its scheduler for: there, the scheduler leases
    the GPUs itself (``RunSpec.gpus`` stays empty) and runs the job where it chooses."""

    gpus_per_node: int = 0
    nodes: int = 1
    cpus_per_task: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_args: Sequence[str] = ()
    pending_timeout_s: float = 1800.0
    """A job still pending after this long is cancelled and reported as ``PENDING``."""


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
    pre_stop: PreStop | None = None
    """What to do before a timeout or silence stop, to keep evidence (None: stop at once)."""
    silence_timeout_s: float | None = None
    """A run that writes no output for this long ends as a timeout (None: only ``timeout_s``)."""
    batch: BatchRequest | None = None
    """Batch-scheduler runners only: the resources to ask for (None: one node, no GPUs)."""
    output_limit_bytes: int | None = None
    """Bytes the run may put in ``run_dir`` (its ``/work/out``); past it the run is stopped and
    ends as an infra error ("output limit exceeded"). Checked every :data:`OUTPUT_CHECK_S`."""

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
    scheduler_state: str = ""
    """With ``Termination.SCHEDULER``: the batch scheduler's job state (see ``RunEnding``)."""

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class Supervised(Protocol):
    """A started run as :meth:`Runner._supervise` drives it; each process backend has one."""

    @property
    def last_output_at(self) -> float:
        """When the run last wrote output, on the supervisor's clock."""
        ...

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the run's command to exit; whether it has."""
        ...

    def pre_stop(self, pre_stop: PreStop) -> None:
        """Apply ``pre_stop`` (signal, then command); the supervisor does the waiting."""
        ...

    def stop(self, grace_s: float) -> None:
        """SIGTERM everything of the run, SIGKILL what is left after ``grace_s``."""
        ...


class Runner(abc.ABC):
    """Base class of every runner backend.

    The public :meth:`run` prepares the run directory, times the run and turns an
    :class:`InfraError` into a result; backends implement :meth:`_execute` (supervising through
    :meth:`_supervise`), :meth:`owns` and :meth:`reap_orphans`.
    """

    alias: ClassVar[str]
    in_container: ClassVar[bool] = False
    """Whether the run sees the image's filesystem and interpreter rather than the host's."""
    leases_gpus: ClassVar[bool] = False
    """Whether the runner's own scheduler leases GPUs (Slurm's gres): schedctl's NVML pool and
    GPU checks are then not used on the submit host."""
    poll_s: float = 0.1
    """Supervisor tick for exit, cancel, deadline and silence checks."""

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
        """Run ``spec`` to the end, honouring ``spec.timeout_s``, ``silence_timeout_s``,
        ``pre_stop`` and ``cancel``."""

    @abc.abstractmethod
    def owns(self, pid: int, run_id: str) -> bool:
        """Whether host process ``pid`` belongs to run ``run_id`` of this runner (and instance)."""

    @abc.abstractmethod
    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Kill what runs not in ``live_run_ids`` left behind; return those runs' ids, sorted.

        Only this runner's own runs (of its instance) are touched.
        """

    def close(self) -> None:
        """Release engine connections."""

    def _supervise(
        self,
        run: Supervised,
        spec: RunSpec,
        cancel: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> tuple[Termination, str]:
        """Wait for ``run`` to end: cancel, deadline and silence stop it; the last two first get
        ``spec.pre_stop`` and then end as ``TIMEOUT``; a cancel gets it when it asks for evidence
        (:func:`wants_evidence`) and ends ``CANCELLED``. Returns the termination and its message."""
        deadline = clock() + spec.timeout_s
        next_output_check = clock() + OUTPUT_CHECK_S
        while not run.wait(max(0.0, min(self.poll_s, deadline - clock()))):
            if cancel.is_set():
                if wants_evidence(cancel):
                    self._pre_stop(run, spec, clock)
                run.stop(spec.grace_s)
                return Termination.CANCELLED, "cancelled"
            now = clock()
            if spec.output_limit_bytes is not None and now >= next_output_check:
                next_output_check = now + OUTPUT_CHECK_S
                size = directory_size(spec.run_dir, spec.output_limit_bytes)
                if size > spec.output_limit_bytes:
                    run.stop(spec.grace_s)
                    return Termination.INFRA, (
                        f"output limit exceeded: the run wrote over {spec.output_limit_bytes} "
                        f"bytes into {spec.run_dir} and was stopped"
                    )
            silent_for = now - run.last_output_at
            if now >= deadline:
                why = f"timed out after {spec.timeout_s:g}s"
            elif spec.silence_timeout_s is not None and silent_for >= spec.silence_timeout_s:
                why = f"no output for {silent_for:.0f}s (silence timeout)"
            else:
                continue
            self._pre_stop(run, spec, clock)
            run.stop(spec.grace_s)
            return Termination.TIMEOUT, why
        return Termination.EXITED, ""

    def _pre_stop(self, run: Supervised, spec: RunSpec, clock: Callable[[], float]) -> None:
        """Keep the evidence ``spec.pre_stop`` asks for, while the run's processes still live."""
        if spec.pre_stop is None:
            return
        _collect(spec.pre_stop)
        run.pre_stop(spec.pre_stop)
        self._await_evidence(run, spec.pre_stop, clock)

    def _await_evidence(
        self, run: Supervised, pre_stop: PreStop, clock: Callable[[], float]
    ) -> None:
        """Wait up to ``pre_stop.wait_s`` for the evidence: until the run exits or it is ready."""
        until = clock() + pre_stop.wait_s
        while not _evidence_ready(pre_stop):
            left = until - clock()
            if left <= 0 or run.wait(min(self.poll_s, left)):
                return


def _evidence_ready(pre_stop: PreStop) -> bool:
    try:
        return pre_stop.ready is not None and pre_stop.ready()
    except Exception:
        log.exception("pre_stop_ready_failed")
        return False


def _collect(pre_stop: PreStop) -> None:
    if pre_stop.collect is None:
        return
    try:
        pre_stop.collect()
    except Exception:  # evidence is best effort: the stop must still happen
        log.exception("pre_stop_collect_failed")


def directory_size(root: Path, stop_above: int) -> int:
    """Bytes allocated under ``root`` (not following links); stops counting past ``stop_above``.

    Allocated blocks, not apparent sizes: a sparse file costs the disk nothing.
    """
    total = 0
    pending = [root]
    while pending and total <= stop_above:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return total


class InFlight:
    """The runs a runner carries right now: never reaped as orphans, never started twice at once."""

    def __init__(self, runner: str) -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    @contextlib.contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        with self._lock:
            if run_id in self._ids:
                raise InfraError(f"run {run_id} is already running on this {self._runner}")
            self._ids.add(run_id)
        try:
            yield
        finally:
            with self._lock:
                self._ids.discard(run_id)


def install_plugin(target_dir: Path) -> Path:
    """Copy the results plugin into ``target_dir`` and return the dir: the code as
    ``schedctl_results_impl.py`` (with its bytecode), loaded through a small
    ``schedctl_results.py`` shim (:data:`PLUGIN_SHIM`).

    The plugin is copied rather than imported from this package so it loads under any interpreter
    (a project's venv, a container image) that cannot import ``runners``.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    _copy_module(Path(__file__).with_name("pytest_plugin.py"), target_dir, PLUGIN_IMPL_MODULE)
    (target_dir / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SHIM, encoding="utf-8")
    # The marker catalog plugin (loaded with -p schedctl_catalog when the project has a catalog).
    _copy_module(Path(__file__).with_name("catalog_plugin.py"), target_dir, CATALOG_MODULE)
    return target_dir


def _copy_module(source: Path, target_dir: Path, name: str) -> None:
    """Copy ``source`` to ``target_dir/name.py``, with its bytecode where this package has it.

    The copy keeps the source's mtime, so the package's own timestamp-checked ``.pyc`` is valid
    for it too: an interpreter of the same version (the host's, or an image's) then loads the
    plugin without compiling it (runs set ``PYTHONDONTWRITEBYTECODE``, so each would compile it
    afresh). Any other interpreter finds no ``.pyc`` of its own tag and compiles as before.
    """
    copy = target_dir / f"{name}.py"
    shutil.copyfile(source, copy)
    stat = source.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tag = sys.implementation.cache_tag
    cached = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
    if tag is None or not cached.is_file():
        return
    with contextlib.suppress(OSError):  # bytecode is an optimisation; the source is there
        (target_dir / "__pycache__").mkdir(exist_ok=True)
        shutil.copyfile(cached, target_dir / "__pycache__" / f"{name}.{tag}.pyc")


class BoundedLog:
    """Append-only log file capped at ``limit`` bytes; excess is dropped with one marker line."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self.truncated = False
        self._fh = path.open("ab")
        self._lock = threading.Lock()  # the output pump and the runner's own notes

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.truncated or self._fh.closed:
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
        with self._lock:
            self._fh.close()

    def __enter__(self) -> BoundedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
