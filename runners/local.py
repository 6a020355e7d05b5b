"""Run the command as a local subprocess, and own every process it starts.

Plugin alias: local. Every process of a run carries the run's tag in its environment,
``SCHEDCTL_RUN=<instance>:<run id>`` (children inherit it, also those that call ``setsid`` or that
torchrun starts in sessions of their own), where ``instance`` names the daemon instance (a hash of
its state dir, given by the registry) or, when none is given, this runner object alone. The tag is
how the runner finds a run's processes: to signal them before a stop (:class:`PreStop`), to kill
them all at the end of the run, to answer :meth:`LocalRunner.owns` and, after a crash of the
process that supervised them, to reap them (:meth:`LocalRunner.reap_orphans`) -- only ever the
runs of its own instance.

On timeout, silence or cancel the command's process group and every tagged process get SIGTERM,
then SIGKILL after the grace; whatever the ending, no tagged process outlives the run.

Given a :class:`~runners.prewarm.Prewarm` (``schedctl run`` starts one while it prepares the
run), the runner's first run that it fits becomes that already-started launcher ("go") instead
of a fresh spawn: same pipes, process group, account and environment; the launcher itself
carries its ``launch-`` tag, which counts as the run's (see :mod:`runners.prewarm`).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from runners.base import (
    PRE_STOP_MARK,
    BoundedLog,
    InFlight,
    PreStop,
    Runner,
    RunResult,
    RunSpec,
)
from runners.local_user import RunAs
from runners.prewarm import RUN_TAG_ENV, Prewarm, pending_owner_alive
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

log = structlog.get_logger("schedctl.runners")
_KILL_ROUNDS = 10
_KILL_PAUSE_S = 0.05


class LocalRunner(Runner):
    """Subprocess runner. Plugin alias: local.

    Args:
        proc_root: where ``/proc`` is (tests point it elsewhere).
        instance: names the daemon instance in the run tag; runs of other instances are never
            touched. ``None``: a tag unique to this object, so it reaps only its own runs.
        poll_s: supervisor tick.
        clock: monotonic clock for deadline and silence.
        user: ``local.user``: when this process is root, the account the tests run as
            (:mod:`runners.local_user`); ignored otherwise. ``None``: the daemon's own user. The
            daemon passes ``Config.local.run_as()`` (as root: nobody unless configured or
            ``local.allow_root``); this class itself applies no default.
        prewarm: a launcher started before the run was recorded (:mod:`runners.prewarm`),
            used by the first run it fits; the caller discards it if none does.
    """

    alias = "local"

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        instance: str | None = None,
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        user: str | None = None,
        prewarm: Prewarm | None = None,
    ) -> None:
        self.run_as = RunAs.named(user) if user and os.geteuid() == 0 else None
        if instance is not None and (":" in instance or not instance):
            raise ValueError(f"a runner instance is a non-empty name without ':', got {instance!r}")
        self.proc_root = proc_root
        self.instance = instance or f"anon-{uuid.uuid4().hex[:12]}"
        self.poll_s = poll_s
        self._clock = clock
        self._in_flight = InFlight("local runner")
        self._prewarm = prewarm
        self._prewarm_lock = threading.Lock()
        self._launched: dict[str, str] = {}
        """Run id -> the pending id its launcher carries, while the run is in flight."""

    # -- ownership -------------------------------------------------------------------------------

    def tag(self, run_id: str) -> str:
        """The value of :data:`RUN_TAG_ENV` that every process of ``run_id`` carries."""
        return f"{self.instance}:{run_id}"

    def processes(self) -> dict[str, set[int]]:
        """Run id -> live pids carrying this instance's tag (zombies, whose environment is gone,
        and this process excluded)."""
        prefix = f"{RUN_TAG_ENV}={self.instance}:".encode()
        found: dict[str, set[int]] = {}
        for pid, environ in process_environs(self.proc_root):
            for entry in environ.split(b"\0"):
                if entry.startswith(prefix):
                    run_id = entry[len(prefix) :].decode(errors="replace")
                    found.setdefault(run_id, set()).add(pid)
                    break
        return found

    def owns(self, pid: int, run_id: str) -> bool:
        pending = self._launched.get(run_id)
        return carries_tag(pid, self.tag(run_id), self.proc_root) or (
            pending is not None and carries_tag(pid, self.tag(pending), self.proc_root)
        )

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """SIGKILL every tagged process of this instance whose run is neither in
        ``live_run_ids`` nor running here; repeats while a dying tree still forks. A launcher
        started before its run was recorded (a ``launch-`` id) is live while its owner runs."""
        live = set(live_run_ids) | self._in_flight.ids()
        reaped: set[str] = set()
        for _ in range(_KILL_ROUNDS):
            orphans = {
                r: pids
                for r, pids in self.processes().items()
                if r not in live and not pending_owner_alive(r, self.proc_root)
            }
            if not orphans:
                break
            reaped.update(orphans)
            for pids in orphans.values():
                _signal_pids(pids, signal.SIGKILL)
            time.sleep(_KILL_PAUSE_S)
        return sorted(reaped)

    def run_pids(self, run_id: str) -> set[int]:
        """Live pids of one run (with its launcher, when it was started before it)."""
        found = self.processes()
        pending = self._launched.get(run_id)
        return found.get(run_id, set()) | (found.get(pending, set()) if pending else set())

    # -- lifecycle -------------------------------------------------------------------------------

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        # Exactly the leased GPUs, and none when nothing is leased: a run never touches a GPU
        # that another run (or a person's training job) holds.
        env = {
            **spec.env,
            RUN_TAG_ENV: self.tag(spec.run_id),
            "CUDA_VISIBLE_DEVICES": ",".join(g.uuid for g in spec.gpus),
        }
        drop = {}
        if self.run_as is not None:
            self.run_as.check_reach(spec.argv, spec.workdir)
            self.run_as.hand_over(spec.run_dir)
            drop = self.run_as.popen_kwargs()
        oom_before = self._oom_kills()
        started = utcnow()
        with (
            self._in_flight.hold(spec.run_id),
            BoundedLog(spec.log_path, spec.log_limit_bytes) as log,
        ):
            proc = self._launch(spec, env, drop)
            try:
                run = _LocalRun(self, proc, spec, env, log)
                try:
                    termination, message = self._supervise(run, spec, cancel, self._clock)
                finally:
                    run.kill_all()
                    run.finish_output(timeout_s=5)
            finally:
                pending = self._launched.pop(spec.run_id, None)
            truncated = log.truncated
        code = proc.returncode
        killed = termination is Termination.EXITED and code == -signal.SIGKILL
        if killed and self._oom_kills() > oom_before:
            termination, message = Termination.OOM, "killed by the kernel OOM killer"
        provenance: dict[str, object] = {"pid": proc.pid, "run_tag": self.tag(spec.run_id)}
        if pending is not None:
            provenance["prewarmed"] = self.tag(pending)
        return RunResult(termination, code, started, utcnow(), message, truncated, provenance)

    def _launch(
        self, spec: RunSpec, env: dict[str, str], drop: dict[str, Any]
    ) -> subprocess.Popen[bytes]:
        """The run's command, started: the prewarmed launcher if it fits, else a fresh spawn."""
        with self._prewarm_lock:
            prewarm, self._prewarm = self._prewarm, None
        if prewarm is not None:
            why = prewarm.mismatch(spec.argv, env, drop)
            if not why and not spec.workdir.is_dir():
                why = f"no directory {spec.workdir}"  # the spawn below reports it as always
            if not why:
                self._launched[spec.run_id] = prewarm.pending
                try:
                    return prewarm.go(spec.argv, spec.workdir, env)
                except OSError as exc:
                    why = f"the launcher is gone ({exc})"
                    self._launched.pop(spec.run_id, None)
            prewarm.discard()
            log.info("prewarm_unused", run_id=spec.run_id, reason=why)
        try:
            return subprocess.Popen(
                list(spec.argv),
                cwd=spec.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **drop,
            )
        except OSError as exc:
            raise InfraError(f"cannot start {spec.argv[0]!r} in {spec.workdir}: {exc}") from exc

    def close(self) -> None:
        """Let a launcher no run used go."""
        with self._prewarm_lock:
            prewarm, self._prewarm = self._prewarm, None
        if prewarm is not None:
            prewarm.discard()

    def _oom_kills(self) -> int:
        """System-wide OOM kill counter (Linux >= 4.13); 0 where unknown."""
        try:
            for line in (self.proc_root / "vmstat").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


class _LocalRun:
    """One started command, as :meth:`Runner._supervise` drives it (:class:`Supervised`)."""

    def __init__(
        self,
        runner: LocalRunner,
        proc: subprocess.Popen[bytes],
        spec: RunSpec,
        env: dict[str, str],
        log: BoundedLog,
    ) -> None:
        self.runner = runner
        self.proc = proc
        self.spec = spec
        self.env = env
        self.log = log
        self.last_output_at = runner._clock()
        self._exited = _exit_poller(proc.pid)
        self._pump = threading.Thread(target=self._copy_output, name="local-output", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while chunk := os.read(stream.fileno(), 65536):
            self.last_output_at = self.runner._clock()
            self.log.write(chunk)

    def finish_output(self, timeout_s: float) -> None:
        """Let the pipe drain (it ends when the last process holding it is gone)."""
        self._pump.join(timeout_s)
        if not self._pump.is_alive() and self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait(self, timeout_s: float) -> bool:
        if self.proc.poll() is not None:
            return True
        if self._exited is not None:
            # Woken the moment the command exits (Popen.wait polls with sleeps of up to 50 ms).
            self._exited.poll(max(0, math.ceil(timeout_s * 1000)))
            return self.proc.poll() is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """Release the exit poller (the command has been reaped)."""
        if self._exited is not None:
            self._exited.close()
            self._exited = None

    def pids(self) -> set[int]:
        return self.runner.run_pids(self.spec.run_id)

    def pre_stop(self, pre_stop: PreStop) -> None:
        proc_root = self.runner.proc_root
        targets = sorted(p for p in self.pids() if _parent(proc_root, p) == self.proc.pid)
        what = []
        if pre_stop.signal is not None:
            what.append(f"{pre_stop.signal.name} to pids {targets}")
        if pre_stop.command:
            what.append(f"run {list(pre_stop.command)}")
        self.log.write(f"\n{PRE_STOP_MARK} {', then '.join(what) or 'nothing'}]\n".encode())
        if pre_stop.signal is not None:
            for pid in targets:
                _signal_pids([pid], pre_stop.signal)
                if pre_stop.stagger_s:
                    time.sleep(pre_stop.stagger_s)
        if pre_stop.command:
            self.log.write(f"[schedctl: pre-stop command {self._command(pre_stop)}]\n".encode())

    def _command(self, pre_stop: PreStop) -> str:
        try:
            done = subprocess.run(
                list(pre_stop.command), cwd=self.spec.workdir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=max(self.spec.grace_s, 1.0), check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            self.log.write(exc.output or b"")
            return "still running"
        except OSError as exc:
            return f"failed: {exc}"
        self.log.write(done.stdout)
        return f"exit {done.returncode}"

    def stop(self, grace_s: float) -> None:
        self._signal_everything(signal.SIGTERM)
        clock = self.runner._clock
        deadline = clock() + grace_s
        while clock() < deadline:
            if self.wait(min(self.runner.poll_s, max(0.0, deadline - clock()))):
                if not self.pids():
                    return
                time.sleep(self.runner.poll_s)  # the command is gone; its ranks may linger

    def kill_all(self) -> None:
        """SIGKILL the group and every tagged process until none is left; reap the command."""
        for _ in range(_KILL_ROUNDS):
            left = self.pids()
            if not left and self.proc.poll() is not None:
                break
            self._signal_everything(signal.SIGKILL, left)
            time.sleep(_KILL_PAUSE_S)
        self.proc.wait()
        self.close()

    def _signal_everything(self, sig: signal.Signals, pids: set[int] | None = None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        _signal_pids(self.pids() if pids is None else pids, sig)


class _ExitPoller:
    """A pidfd of our child in a ``poll`` set: readable once the child has exited."""

    def __init__(self, pidfd: int) -> None:
        self._fd = pidfd
        self._poll = select.poll()
        self._poll.register(pidfd, select.POLLIN)

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for the exit; whether it happened."""
        try:
            return bool(self._poll.poll(timeout_ms))
        except InterruptedError:
            return False

    def close(self) -> None:
        os.close(self._fd)


def _exit_poller(pid: int) -> _ExitPoller | None:
    """An exit poller for child ``pid`` (Linux >= 5.3); ``None`` where pidfds are missing.

    Safe against pid reuse: the child is ours and not yet reaped, so ``pid`` is still it.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return _ExitPoller(opener(pid))
    except OSError:
        return None


def _parent(proc_root: Path, pid: int) -> int | None:
    """The parent pid from ``/proc/<pid>/stat`` (fields after the last ``)``: the name may hold
    spaces and parentheses), or None for a process that is gone."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _signal_pids(pids: set[int] | list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def carries_tag(pid: int, tag: str, proc_root: Path = Path("/proc")) -> bool:
    """Whether process ``pid`` has ``SCHEDCTL_RUN=<tag>`` in its environment."""
    try:
        environ = (proc_root / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_TAG_ENV}={tag}".encode() in environ.split(b"\0")


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
