"""A docker run's container, created and started while ``schedctl run`` still prepares the run.

Standard library only (with :mod:`runners.docker_engine`), so ``schedctl run`` can call it from
the plan the tier's last run remembered (:mod:`scheduler.run.launch_plans`), before it has even
validated its config, and long before it imports the docker SDK. :meth:`DockerPlan.start`
creates the container the validated config will make -- the same image, user, read-only root,
dropped capabilities, no-new-privileges, network, pids/memory limits, tmpfs, labels and mounts
(:meth:`runners.docker.DockerRunner.template`) -- and starts it running the prewarmed launcher
(:mod:`runners.launcher`) under the image's ``python3``: it imports pytest and its installed
plugins, with nothing of the project on ``sys.path``, and blocks reading its stdin.

What exists only once the run is recorded is handed over at "go":

* the run dir: the container's ``/work/out`` and ``/work/plugin`` are bind mounts of a *staging*
  dir, ``<runs dir>/.staging-<pending id>``, made for it. At "go" the runner moves what the run
  dir holds (the results plugin) into it and renames it over the (then empty) run dir: a bind
  mount follows the directory, not its path, so the container writes into the run's dir;
* the run's command, environment (``SCHEDCTL_*`` and ``COVERAGE_FILE``, which no interpreter
  reads at start-up, are all that may differ) and name: one JSON message written to the
  container's stdin, which is then closed; the container is renamed to the run's name.

The "go" channel is the container's stdin, attached (``StdinOnce``) by the process that created
it and held open: when that process dies before "go", the engine closes the stdin, the launcher
reads EOF and exits 0 having run nothing, and crash recovery removes the container (its
``schedctl.run-id`` label is the pending id ``launch-<owner pid>-<start>-<n>``: reaped once the
owner is gone, left alone while it lives). Staging dirs of dead owners are removed by the next
prewarm. If the validated config's container differs from the prewarmed one in anything (see
:meth:`DockerPrewarm.mismatch`), the runner removes it and creates the run's container as always.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.docker_engine import EngineClient, create_body
from runners.prewarm import launcher_source, pending_id, pending_owner_alive
from scheduler.kernel.errors import InfraError

STAGING_PREFIX = ".staging-"
STAGING_MODE = 0o700
"""As :data:`scheduler.run.rundirs.STATE_MODE`: the staging dir becomes the run dir."""
RUN_DIR_SOURCE = "<run dir>"
"""What a template names the run dir by (the source of the run's ``/work/out`` mount, and of
``/work/plugin`` when the plugin is the run dir's ``plugin``)."""
LABEL_RUN_ID = "schedctl.run-id"
LABEL_INSTANCE = "schedctl.instance"
MAY_DIFFER = ("SCHEDCTL_", "COVERAGE_FILE")
"""Variables of the run's environment that may differ from the container's at "go": nothing
reads them at the interpreter's start-up (``PYTHONPATH`` is the same ``/work/plugin`` always)."""
MESSAGE_MAX_BYTES = 1 << 20


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of a run's container environment that the prewarmed container is created with."""
    return {k: v for k, v in env.items() if not k.startswith(MAY_DIFFER)}


def hand_to(run_dir: Path, user: str) -> None:
    """Make ``run_dir`` (only it) writable for the container user ``uid:gid``.

    Raises:
        InfraError: it cannot be.
    """
    uid, _, gid = user.partition(":")
    try:
        if os.geteuid() == 0:
            os.chown(run_dir, int(uid), int(gid or uid))
        elif run_dir.stat().st_uid != int(uid):
            run_dir.chmod(0o777)  # rootless daemon with a foreign container uid: no other way
    except (OSError, ValueError) as exc:
        raise InfraError(f"cannot hand {run_dir} to container user {user}: {exc}") from exc


def remove_stale_staging(runs_dir: Path) -> list[Path]:
    """Remove the staging dirs whose owner is gone; the dirs removed."""
    removed = []
    try:
        entries = [e for e in os.listdir(runs_dir) if e.startswith(STAGING_PREFIX)]
    except OSError:
        return []
    for entry in entries:
        if pending_owner_alive(entry[len(STAGING_PREFIX) :]) is False:
            shutil.rmtree(runs_dir / entry, ignore_errors=True)
            removed.append(runs_dir / entry)
    return removed


def reap_dead_prewarms(client: EngineClient, instance: str) -> list[str]:
    """Remove the instance's prewarmed containers whose owner is gone (its crash recovery does
    too; a prewarm does it after its own start, so a ``schedctl run`` killed before "go" leaves
    nothing for long even without a daemon); their pending ids."""
    removed = []
    for found in client.containers([LABEL_RUN_ID, f"{LABEL_INSTANCE}={instance}"]):
        pending = str((found.get("Labels") or {}).get(LABEL_RUN_ID, ""))
        if pending_owner_alive(pending) is False:
            client.remove(str(found["Id"]))
            removed.append(pending)
    return removed


@dataclass(frozen=True)
class DockerPlan:
    """How to prewarm a tier's container: the run's ``containers.create`` arguments without
    what only the run has (:meth:`runners.docker.DockerRunner.template`), where run dirs go,
    the engine's socket and the command's interpreter. JSON-able."""

    template: Mapping[str, Any]
    runs_dir: str
    socket_path: str
    python: str = "python3"
    runner = "docker"

    def start(self) -> DockerPrewarm | None:
        return DockerPrewarm.start(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.runner,
            "template": json.loads(json.dumps(self.template)),
            "runs_dir": self.runs_dir,
            "socket_path": self.socket_path,
            "python": self.python,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DockerPlan:
        """Raises ``TypeError``/``KeyError`` on anything but :meth:`to_json`'s output."""
        template = data["template"]
        strings = (data["runs_dir"], data["socket_path"], data["python"])
        if not isinstance(template, dict) or not all(isinstance(s, str) for s in strings):
            raise TypeError("a docker plan is a template and three strings")
        create_body(_prewarm_kwargs(template, "x", Path("/x"), [data["python"]]))  # validates
        return cls(template, data["runs_dir"], data["socket_path"], data["python"])


def _prewarm_kwargs(
    template: Mapping[str, Any], pending: str, staging: Path, command: Sequence[str]
) -> dict[str, Any]:
    """The prewarmed container's create arguments: the template with a pending name and run id,
    the staging dir for the run's mounts, the launcher for the command, stdin open."""
    sources = {RUN_DIR_SOURCE: str(staging), f"{RUN_DIR_SOURCE}/plugin": str(staging / "plugin")}
    mounts = []
    for given in template["mounts"]:
        mount = dict(given)
        mount["Source"] = sources.get(mount["Source"], mount["Source"])
        mounts.append(mount)
    labels = {**template["labels"], LABEL_RUN_ID: pending}
    prefix = template["name_prefix"]
    kwargs = {k: v for k, v in template.items() if k not in ("name_prefix", "engine")}
    kwargs.update(
        name=f"{prefix}-{pending}",
        labels=labels,
        mounts=mounts,
        command=list(command),
        stdin_open=True,
    )
    return kwargs


class DockerPrewarm:
    """One prewarmed container, waiting for the run it was started for; used once.

    The engine calls that make it (create, attach, start: ~0.3 s, most of it the engine's) run
    in a thread, while schedctl goes on importing and recording the run; :meth:`ready` waits.
    """

    runner = "docker"

    def __init__(self, plan: DockerPlan, client: EngineClient, staging: Path, pending: str) -> None:
        self.plan = plan
        self.client = client
        self.staging: Path | None = staging
        self.pending = pending
        self.container_id = ""
        self.created_at = 0.0
        """``time.monotonic()`` just before the container was created."""
        self.failure = ""
        self._stdin: socket.socket | None = None
        self._done = False
        self._thread = threading.Thread(target=self._make, name="docker-prewarm", daemon=True)
        self._remover: threading.Thread | None = None

    @classmethod
    def start(cls, plan: DockerPlan, client: EngineClient | None = None) -> DockerPrewarm | None:
        """Make the staging dir, then create, attach and start the container in a thread;
        ``None`` when the staging dir cannot be made. An engine failure is found at
        :meth:`ready` (the run then creates its container as always, and reports any engine
        problem itself)."""
        client = client or EngineClient(plan.socket_path)
        runs_dir = Path(plan.runs_dir)
        pending = pending_id()
        staging = runs_dir / f"{STAGING_PREFIX}{pending}"
        try:
            runs_dir.mkdir(mode=STAGING_MODE, parents=True, exist_ok=True)
            remove_stale_staging(runs_dir)
            staging.mkdir(mode=STAGING_MODE)
            (staging / "plugin").mkdir(mode=0o755)
            hand_to(staging, str(plan.template["user"]))
        except (InfraError, OSError, KeyError):
            shutil.rmtree(staging, ignore_errors=True)
            return None
        prewarm = cls(plan, client, staging, pending)
        prewarm._thread.start()
        return prewarm

    def _make(self) -> None:
        client = self.client
        try:
            assert self.staging is not None
            command = [self.plan.python, "-c", launcher_source(), "0"]
            kwargs = _prewarm_kwargs(self.plan.template, self.pending, self.staging, command)
            body = create_body(kwargs)
            self.created_at = time.monotonic()
            self.container_id = client.create(body, kwargs["name"])
            stdin = client.attach_stdin(self.container_id)
            try:
                client.start(self.container_id)
            except BaseException:
                stdin.close()
                raise
            self._stdin = stdin
            with contextlib.suppress(InfraError, KeyError):
                reap_dead_prewarms(client, str(self.plan.template["labels"][LABEL_INSTANCE]))
        except (InfraError, OSError, ValueError, KeyError, TypeError) as exc:
            self.failure = str(exc) or type(exc).__name__
            with contextlib.suppress(InfraError):
                if self.container_id:
                    self.client.remove(self.container_id)

    def ready(self, timeout_s: float = 60.0) -> bool:
        """Wait for the container to be started; whether it was (else see :attr:`failure`)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.failure = self.failure or f"not started after {timeout_s:g} s"
            return False
        return self._stdin is not None and not self._done

    @property
    def used(self) -> bool:
        return self._done

    def mismatch(self, template: Mapping[str, Any], argv: Sequence[str]) -> str:
        """Why this container cannot become the run whose container would be made from
        ``template`` to run ``argv``; ``""`` if it can."""
        if self.used:
            return "already used"
        if not self.ready():
            return f"it could not be started: {self.failure}"
        if list(argv[:3]) != [self.plan.python, "-m", "pytest"]:
            return f"the command is not {self.plan.python} -m pytest"
        try:
            mine = json.loads(json.dumps(self.plan.template))
            theirs = json.loads(json.dumps(template))
        except (TypeError, ValueError):
            return "the run's container is not one a prewarm makes (GPUs?)"
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                return f"the container's {key} differs"
        return ""

    def adopt(self, run_dir: Path) -> None:
        """Make the staging dir the run's dir: what ``run_dir`` holds moves into it (the
        plugin's files into its ``plugin`` dir), then it is renamed over the empty ``run_dir``.

        Raises:
            OSError: a move failed (the run fails as an infrastructure error).
        """
        staging = self.staging
        if staging is None:
            raise OSError("the prewarmed container's staging dir was already adopted")
        for entry in os.listdir(run_dir):
            source, target = run_dir / entry, staging / entry
            if entry == "plugin" and source.is_dir() and not source.is_symlink():
                for inner in os.listdir(source):
                    os.rename(source / inner, target / inner)
                target.chmod(source.stat().st_mode & 0o7777)
                os.rmdir(source)
            else:
                os.rename(source, target)
        os.rename(staging, run_dir)  # over an empty directory: atomic, the path never vanishes
        self.staging = None

    def go(self, message: Mapping[str, Any]) -> None:
        """Hand the launcher its run (``argv``, ``cwd``, ``env``, ``spawn_env``) and close its
        stdin. Raises ``OSError`` when the container is gone."""
        sock, self._stdin = self._stdin, None
        if sock is None or self._done:
            raise OSError("the prewarmed container was already used")
        self._done = True
        data = json.dumps({**message, "stamp": False}).encode("utf-8")
        try:
            if len(data) > MESSAGE_MAX_BYTES:
                raise OSError(f"the run's command and environment exceed {MESSAGE_MAX_BYTES} bytes")
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        finally:
            sock.close()

    def discard(self, wait: bool = True) -> None:
        """Remove an unused container (it has run nothing of the project: no "go" was sent)
        and its staging dir. A no-op once the run used it.

        ``wait=False`` (the validated config will not use it) removes it in a thread, while the
        command goes on starting its run; a later ``discard()`` waits for that removal.
        """
        if self._remover is None:
            if self._done:
                return
            self._done = True
            self._remover = threading.Thread(
                target=self._remove, name="docker-prewarm-discard", daemon=True
            )
            self._remover.start()
        if wait:
            self._remover.join()

    def _remove(self) -> None:
        self._thread.join()  # what it is making is removed below
        sock, self._stdin = self._stdin, None
        if sock is not None:
            sock.close()  # were the removal refused, the launcher reads EOF and exits 0
        with contextlib.suppress(InfraError):
            if self.container_id:
                self.client.remove(self.container_id)
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
