"""Start a local pytest run's process while schedctl still prepares the run (overlap).

Standard library only, so ``schedctl run`` can call it right after loading its config, before it
imports the store, the dispatcher and the runners. :meth:`Prewarm.start` spawns the launcher
(:mod:`runners.launcher`) under the tier's interpreter, in its environment and account; the
launcher imports pytest and its plugins and waits. When the run is recorded the local runner
(:class:`runners.local.LocalRunner`, given the prewarm) checks that the launcher fits the run
(:meth:`Prewarm.mismatch`) and sends it "go" (:meth:`Prewarm.go`) instead of spawning; if it does
not fit, it discards it and spawns as always.

What may differ between the launcher's start and "go" is only what no interpreter reads at its
start: ``SCHEDCTL_*`` (the run's tag, results path, nonce...), ``COVERAGE_FILE`` and the run's
``PYTHONPATH`` entries (the launcher builds ``sys.path`` from them as ``python -m`` would).
Any other difference -- ``PYTHON*``, ``LD_*``, locale, ``HOME``, ``PATH``, GPU variables -- means
no "go": the run falls back to a plain spawn.

Ownership: the launcher starts with the run tag ``SCHEDCTL_RUN=<instance>:launch-<pid>-<start>-<n>``
(its owner's pid and start time) and a pad variable (``SCHEDCTL_LAUNCH_PAD``) first in its
environment. At "go" it writes the run's own tag, stacks directory and other run variables over
the pad, in place, so ``/proc/<pid>/environ`` -- where the local runner, crash recovery and the
hang-evidence script look -- shows the run's tag before the ``launch-`` one (where that cannot be
done it execs the plain command instead). The local runner counts both tags as the run's; crash
recovery reaps a ``launch-`` tag once its owner is gone and leaves it alone while the owner lives.
A launcher whose owner dies before "go" reads EOF and exits 0 without running anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_TAG_ENV = "SCHEDCTL_RUN"
"""The environment variable that marks a run's processes: ``<instance>:<run id>``."""
PENDING_PREFIX = "launch-"
MAY_DIFFER = ("SCHEDCTL_", "COVERAGE_FILE", "PYTHONPATH")
"""Environment variables (names or prefixes) that may change between the start and "go"."""
DISCARD_WAIT_S = 5.0
PAD_ENV = "SCHEDCTL_LAUNCH_PAD"
PAD_BYTES = 4096
"""Room in the launcher's environment for the run's own variables (see runners/launcher.py)."""
MESSAGE_MAX_BYTES = 60_000
"""A "go" message must fit in a pipe's buffer (64 KiB on Linux)."""


def instance_of(state_dir: Path) -> str:
    """The daemon instance name of a state dir: tags its local processes and labels its
    containers, so that two daemons (or test sessions) on one host never reap each other's."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def start_ticks(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``None``: it is gone)."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def pending_id(proc_root: Path = Path("/proc")) -> str:
    """A run id for a launcher whose run is not recorded yet, naming this process as its owner."""
    pid = os.getpid()
    return f"{PENDING_PREFIX}{pid}-{start_ticks(pid, proc_root) or 0}-{os.urandom(4).hex()}"


def pending_owner_alive(run_id: str, proc_root: Path = Path("/proc")) -> bool | None:
    """For a launcher's pending run id: whether the process that started it still runs (same pid
    and start time). ``None`` when ``run_id`` is no pending id."""
    if not run_id.startswith(PENDING_PREFIX):
        return None
    pid, _, rest = run_id[len(PENDING_PREFIX) :].partition("-")
    ticks = rest.partition("-")[0]
    if not pid.isdigit():
        return False
    return start_ticks(int(pid), proc_root) == ticks


def launcher_source() -> str:
    return Path(__file__).with_name("launcher.py").read_text(encoding="utf-8")


LAUNCHER_BOOT = """\
import sys
try:
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("schedctl_launcher", sys.argv[2])
    launcher = module_from_spec(spec)
    spec.loader.exec_module(launcher)
except Exception:
    launcher = type(sys)("schedctl_launcher")
    exec(compile(sys.argv[3], "<schedctl launcher>", "exec"), launcher.__dict__)
del sys.argv[2:]
launcher.main()
"""
"""How a local launcher starts: ``python -c LAUNCHER_BOOT FD PATH SOURCE``. It loads
:mod:`runners.launcher` from its file, as an import would -- from the bytecode beside it when
the interpreter has bytecode of its own version there (``compileall``, an installed package),
instead of compiling ~350 lines on every run's way to its first test (5-11 ms) -- and from the
source passed along when the file cannot be read (another account, say). Nothing is imported
from the run's directory or ``sys.path``: the file is named by its path."""


def launcher_command(python: str, fd: int) -> list[str]:
    """The command line of a local launcher reading "go" from ``fd`` (see :data:`LAUNCHER_BOOT`)."""
    path = Path(__file__).with_name("launcher.py")
    return [python, "-c", LAUNCHER_BOOT, str(fd), str(path), launcher_source()]


@dataclass(frozen=True)
class Plan:
    """How to start a tier's launcher: interpreter, environment (without the run tag), the run
    tag's instance and the account switch's ``Popen`` arguments. JSON-able."""

    python: str
    env: Mapping[str, str]
    instance: str
    user: Mapping[str, Any] = field(default_factory=dict)

    def start(self) -> Prewarm | None:
        prewarm = Prewarm.start(
            python=self.python, cwd=Path("/"), env=self.env, instance=self.instance, user=self.user
        )
        if prewarm is not None:
            prewarm.plan = self
        return prewarm

    def to_json(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "env": dict(self.env),
            "instance": self.instance,
            "user": dict(self.user),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Raises ``TypeError``/``KeyError``/``ValueError`` on anything but :meth:`to_json`'s."""
        env, user = data["env"], data["user"]
        if not (isinstance(data["python"], str) and isinstance(data["instance"], str)):
            raise TypeError("python and instance are strings")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise TypeError("env maps names to strings")
        if not isinstance(user, dict) or set(user) - {"user", "group", "extra_groups"}:
            raise TypeError("user holds the account switch's Popen arguments only")
        return cls(data["python"], dict(env), data["instance"], dict(user))


class Prewarm:
    """One launcher, waiting for the run it was started for; used once, by one local run."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        go_fd: int,
        python: str,
        env: Mapping[str, str],
        user: Mapping[str, Any],
        pending: str,
    ) -> None:
        self.proc = proc
        self._go_fd: int | None = go_fd
        self.python = python
        self.env = dict(env)
        self.user = dict(user)
        self.pending = pending
        self.plan: Plan | None = None
        """The plan it was started from, when it was (see :meth:`Plan.start`)."""

    @classmethod
    def start(
        cls,
        *,
        python: str,
        cwd: Path,
        env: Mapping[str, str],
        instance: str,
        user: Mapping[str, Any] | None = None,
    ) -> Prewarm | None:
        """Spawn a launcher; ``None`` when it cannot start (the run then spawns as always and
        reports why, as it does today). ``env`` is the run's environment without the run tag;
        ``user`` the ``Popen`` arguments of the account switch (``local.user``)."""
        pending = pending_id()
        # The pad comes first: the run's tag written over it at "go" precedes the launcher's own.
        spawn_env = {PAD_ENV: "x" * PAD_BYTES, **env, RUN_TAG_ENV: f"{instance}:{pending}"}
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                launcher_command(python, read_fd),
                cwd=cwd,
                env=spawn_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(read_fd,),
                **dict(user or {}),
            )
        except (OSError, ValueError, subprocess.SubprocessError):
            os.close(write_fd)
            return None
        finally:
            os.close(read_fd)
        return cls(proc, write_fd, python, spawn_env, user or {}, pending)

    def mismatch(self, argv: Sequence[str], env: Mapping[str, str], user: Mapping[str, Any]) -> str:
        """Why this launcher cannot become the run ``argv``/``env``/``user``; ``""`` if it can."""
        if self._go_fd is None:
            return "already used"
        if list(argv[:3]) != [self.python, "-m", "pytest"]:
            return f"the command is not {self.python} -m pytest"
        if dict(user) != self.user:
            return "another account"
        for key in sorted(set(env) | set(self.env)):
            if env.get(key) != self.env.get(key) and not key.startswith(MAY_DIFFER):
                return f"{key} differs, and the interpreter reads it at start-up"
        if self.proc.poll() is not None:
            return f"the launcher exited ({self.proc.returncode})"
        return ""

    def go(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Hand the launcher its run; it becomes ``argv``. Raises ``OSError`` when the launcher
        is gone (the caller discards it and spawns as always)."""
        fd, self._go_fd = self._go_fd, None
        if fd is None:
            raise OSError("the launcher was already used")
        message = json.dumps(
            {"argv": list(argv), "cwd": str(cwd), "env": dict(env), "spawn_env": sorted(self.env)}
        )
        if len(message.encode("utf-8")) > MESSAGE_MAX_BYTES:
            # Larger than a pipe holds: the write could wait on a launcher that waits on its
            # own full output pipe, which nobody reads before "go".
            self._go_fd = fd
            self.discard()
            raise OSError(f"the run's command and environment exceed {MESSAGE_MAX_BYTES} bytes")
        try:
            with open(fd, "wb", closefd=True) as pipe:
                pipe.write(message.encode("utf-8"))
        except OSError:
            self._reap()
            raise
        return self.proc

    def discard(self) -> None:
        """End an unused launcher (it has run nothing of the project: no "go" was sent)."""
        fd, self._go_fd = self._go_fd, None
        if fd is None:
            return
        os.close(fd)  # were the kill refused, it reads EOF and exits 0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        try:
            self.proc.wait(DISCARD_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
