"""Run the command in a fresh, hardened container on the host's Docker engine.

Plugin alias: docker. The lifecycle follows ofelia's ``Run()``: find the image (never pulled) ->
create -> start -> stream the logs into a bounded file -> own deadline timer -> on timeout or
cancel stop with grace, then kill -> read ``State.ExitCode`` / ``State.OOMKilled`` -> always remove.

Host paths in the spec are mounted at fixed container paths and every argv element and env value
that names them is rewritten (see :class:`PathMap`):

=====================  ==================  ============
host                   container           mode
=====================  ==================  ============
``spec.workdir``       ``/work/src``       read-only, working directory
``spec.run_dir``       ``/work/out``       read-write
``spec.plugin_dir``    ``/work/plugin``    read-only
``spec.mounts`` keys   their values        read-only
(tmpfs)                ``/tmp``            read-write, exec, HOME
=====================  ==================  ============

A run that outlives ``spec.timeout_s`` (or is silent for ``spec.silence_timeout_s``) first gets
``spec.pre_stop`` (:class:`PreStop`): its signal goes to the children of the command (the init's
child), its command runs inside the container, so that evidence such as the workers' stacks is
written before the stop.

A run owns the host processes in its containers' cgroups (:meth:`DockerRunner.owns`); the runner
remembers the containers of its recent runs, since a finished run's container is already removed
when the scheduler asks (the GPU leak check).

Every ``docker.errors`` and ``requests`` exception is translated in :func:`_map_docker_errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from runners.base import BoundedLog, Runner, RunResult, RunSpec
from runners.docker_prewarm import RUN_DIR_SOURCE, DockerPrewarm, hand_to, startup_env
from runners.docker_support import (
    DEFAULT_SOCKET,
    KNOWN_DOCKER_ERRORS,
    PathMap,
    _ContainerRun,
    _LogPump,
    _map_docker_errors,
    _overlaps,
    _wait_in_thread,
    docker_available,
    engine_address,
)
from runners.prewarm import PENDING_PREFIX, pending_owner_alive
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import ImageMissing, InfraError
from scheduler.kernel.outcome import Termination

# The docker SDK (and requests, ~145 ms) is imported where the runner first needs its client: a
# run in a prewarmed container is handed its command before (see _execute_prewarmed).
if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from docker.models.images import Image
    from structlog.typing import FilteringBoundLogger

    from runners.docker_build import DockerImageBuilder

DEFAULT_IMAGE = "schedctl-test:bookworm"
CONTAINER_SRC = "/work/src"
CONTAINER_OUT = "/work/out"
CONTAINER_PLUGIN = "/work/plugin"
RESERVED_TARGETS = (CONTAINER_SRC, CONTAINER_OUT, CONTAINER_PLUGIN, "/tmp")
LABEL_RUN_ID = "schedctl.run-id"
LABEL_TIER = "schedctl.tier"
LABEL_INSTANCE = "schedctl.instance"
BASE_ENV: Mapping[str, str] = {
    "HOME": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
CONTAINER_UID = 64000
"""Default uid and gid of the test processes in a container: an id no host account should have,
so files a container leaves in its run dir belong to nobody on the host (``docker.uid``)."""
REMEMBERED_RUNS = 256
"""How many recent runs' container ids :meth:`DockerRunner.owns` remembers."""


__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_SOCKET",
    "KNOWN_DOCKER_ERRORS",
    "DockerRunner",
    "PathMap",
    "docker_available",
    "engine_address",
]


class DockerRunner(Runner):
    """Hardened container runner. Plugin alias: docker.

    Args:
        client: Docker SDK client; ``docker.from_env()`` is built on first use when None.
        default_image: image used when the spec names none.
        user: numeric ``uid:gid`` the command runs as (never root; no image entry needed). The
            default is :data:`CONTAINER_UID`, an id no host account has (``docker.uid``/``gid``).
        tmpfs_size: size of the ``/tmp`` tmpfs.
        instance: tag for this scheduler instance; reaping and name clashes only touch containers
            of the same instance, so two daemons (or test sessions) can share one engine.
        poll_s: supervisor tick for deadline and cancel checks.
        clock: monotonic clock for the deadline.
        proc_root: where the host's ``/proc`` is, for :meth:`owns`.
        prewarm: a container ``schedctl run`` created and started early
            (:mod:`runners.docker_prewarm`): the first run it fits becomes it.
    """

    alias = "docker"
    in_container = True

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        default_image: str = DEFAULT_IMAGE,
        user: str = f"{CONTAINER_UID}:{CONTAINER_UID}",
        tmpfs_size: str = "1g",
        instance: str | None = None,
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        log: FilteringBoundLogger | None = None,
        proc_root: Path = Path("/proc"),
        prewarm: DockerPrewarm | None = None,
    ) -> None:
        self._client = client
        self.default_image = default_image
        self.user = user
        self.tmpfs_size = tmpfs_size
        self.instance = instance
        self.poll_s = poll_s
        self._clock = clock
        self._log = log or structlog.get_logger("runners.docker")
        self.proc_root = proc_root
        self._lock = threading.Lock()
        self._containers: OrderedDict[str, set[str]] = OrderedDict()
        self._prewarm = prewarm

    @property
    def address(self) -> str:
        return engine_address(self._client)

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, built from the environment on first use.

        Raises:
            EngineDown: ``docker.from_env()`` could not reach the engine.
        """
        if self._client is None:
            with _map_docker_errors(self.address):
                import docker

                self._client = docker.from_env()
        return self._client

    def image_builder(self) -> DockerImageBuilder:
        """Builds and removes images on this runner's engine (the ``build`` tier kind)."""
        from runners.docker_build import DockerImageBuilder

        return DockerImageBuilder(self.client)

    def close(self) -> None:
        self._take_prewarm(discard=True)
        if self._client is not None:
            self._client.close()

    def container_name(self, spec: RunSpec) -> str:
        parts = [p for p in ("schedctl", self.instance, spec.tier, spec.run_id) if p]
        return re.sub(r"[^a-zA-Z0-9_.-]", "-", "-".join(parts))

    # -- lifecycle -------------------------------------------------------------------------------

    def _take_prewarm(self, discard: bool = False) -> DockerPrewarm | None:
        with self._lock:
            prewarm, self._prewarm = self._prewarm, None
        if prewarm is not None and discard:
            prewarm.discard()
            return None
        return prewarm

    def _execute(self, spec: RunSpec, cancel: threading.Event) -> RunResult:
        prewarm = self._take_prewarm()
        if prewarm is not None:
            result = self._execute_prewarmed(prewarm, spec, cancel)
            if result is not None:
                return result
        client = self.client
        started = utcnow()
        image_name = spec.image or self.default_image
        self._prepare_run_dir(spec.run_dir)
        with _map_docker_errors(self.address):
            image = self._find_image(client, image_name)
            self._remove_leftover(client, self.container_name(spec))
            created_at = self._clock()
            container = client.containers.create(**self.create_kwargs(spec, image.id))
        self._remember(spec.run_id, container.id)
        try:
            with _map_docker_errors(self.address):
                result = self._run_container(container, spec, cancel, started, created_at)
                provenance = {**self._provenance(image, image_name), **result.provenance}
                provenance.update(container_id=container.id, container_name=container.name)
                return dataclasses.replace(result, provenance=provenance)
        finally:
            self._remove(container)

    def _execute_prewarmed(
        self, prewarm: DockerPrewarm, spec: RunSpec, cancel: threading.Event
    ) -> RunResult | None:
        """The run in the prewarmed container; ``None`` (it is removed) when it does not fit.

        Up to "go" it talks to the engine with the prewarm's standard-library client; the SDK is
        imported after, while the tests run (the log is read with ``logs``, which also serves a
        container that has already exited).
        """
        started = utcnow()
        image_name = spec.image or self.default_image
        engine = prewarm.client
        try:
            template = self.template(spec)
        except InfraError:
            template = {}
        why = prewarm.mismatch(template, spec.argv) if template else "the run's mounts are bad"
        image_id = ""
        if not why:
            try:
                image_id = engine.image_id(image_name)
                state = engine.inspect(prewarm.container_id)
            except InfraError as exc:
                why = str(exc)
            else:
                if state.get("Image") != image_id:
                    why = f"image {image_name!r} changed since the container was created"
                elif not state.get("State", {}).get("Running"):
                    why = "its launcher exited"
        if why:
            self._log.info("prewarmed container not used", reason=why)
            prewarm.discard()
            return None
        container_id = prewarm.container_id
        self._remember(spec.run_id, container_id)
        name = self.container_name(spec)
        container: Container | None = None
        try:
            leftover = engine.find(name)
            if leftover is not None:
                self._log.warning("removing leftover container", container=name, id=leftover["Id"])
                engine.remove(str(leftover["Id"]))
            try:
                prewarm.adopt(spec.run_dir)
            except OSError as exc:
                raise InfraError(f"cannot make {spec.run_dir} the prewarmed mount: {exc}") from exc
            self._prepare_run_dir(spec.run_dir)
            kwargs = self.create_kwargs(spec, image_id)
            try:
                prewarm.go(
                    {
                        "argv": list(kwargs["command"]),
                        "cwd": CONTAINER_SRC,
                        "env": dict(kwargs["environment"]),
                        "spawn_env": sorted(template["environment"]),
                    }
                )
            except OSError as exc:
                raise InfraError(f"the prewarmed container is gone: {exc}") from exc
            engine.rename(container_id, name)
            client = self.client
            with _map_docker_errors(self.address):
                container = client.containers.get(container_id)
                image = client.images.get(image_id)
                result = self._run_container(
                    container, spec, cancel, started, prewarm.created_at, prewarmed=True
                )
                provenance = {**self._provenance(image, image_name), **result.provenance}
                provenance.update(container_id=container_id, container_name=name, prewarmed=True)
                return dataclasses.replace(result, provenance=provenance)
        finally:
            prewarm.discard()  # a no-op once "go" was sent
            if container is not None:
                self._remove(container)
            else:
                with contextlib.suppress(InfraError):
                    engine.remove(container_id)

    def _run_container(
        self,
        container: Container,
        spec: RunSpec,
        cancel: threading.Event,
        started: datetime,
        created_at: float,
        prewarmed: bool = False,
    ) -> RunResult:
        with BoundedLog(spec.log_path, spec.log_limit_bytes) as log:
            if prewarmed:  # started already, maybe even exited: its whole output, followed
                stream = container.logs(stdout=True, stderr=True, stream=True, follow=True)
            else:
                stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
            pump = _LogPump(stream, log, self._clock)
            if not prewarmed:
                container.start()
            pump.start()
            exited = _wait_in_thread(container)
            # Asked while the tests run rather than after them: one round trip off the run's end.
            provenance: dict[str, Any] = {"docker_version": self._engine_version(container)}
            run = _ContainerRun(
                container, exited, pump, self.address,
                stop=lambda grace_s: self._stop(container, grace_s), remap=self._path_map(spec),
                bound_s=spec.grace_s,
            )  # fmt: skip
            termination, message = self._supervise(run, spec, cancel, self._clock)
            exited.wait(spec.grace_s + 5)
            pump.finish(timeout_s=5)
            truncated = log.truncated
        container.reload()
        state = container.attrs["State"]
        exit_code = state.get("ExitCode")
        if termination is Termination.EXITED and state.get("OOMKilled"):
            termination, message = (
                Termination.OOM,
                f"killed by the OOM killer (memory={spec.memory})",
            )
        if pump.first_output_at is not None:
            provenance["first_output_s"] = round(pump.first_output_at - created_at, 4)
        return RunResult(termination, exit_code, started, utcnow(), message, truncated, provenance)

    def _stop(self, container: Container, grace_s: float) -> None:
        """SIGTERM (forwarded by the container's init), SIGKILL after the grace."""
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            container.stop(timeout=max(0, math.ceil(grace_s)))
            container.reload()
            if container.attrs["State"].get("Running"):
                with contextlib.suppress(docker.errors.APIError):  # 409: it just exited
                    container.kill()

    # -- steps -----------------------------------------------------------------------------------

    @staticmethod
    def _find_image(client: docker.DockerClient, name: str) -> Image:
        import docker.errors

        try:
            return client.images.get(name)
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(
                f"image {name!r} is not on this host and is never pulled (build it: make image)"
            ) from exc

    def _remove_leftover(self, client: docker.DockerClient, name: str) -> None:
        import docker.errors

        try:
            leftover = client.containers.get(name)
        except docker.errors.NotFound:
            return
        self._log.warning("removing leftover container", container=name, id=leftover.short_id)
        leftover.remove(force=True, v=True)

    def _prepare_run_dir(self, run_dir: Path) -> None:
        """Make the output dir (only it, not its parents or what the daemon put in it) writable
        for the container user (the daemon usually runs as root)."""
        hand_to(run_dir, self.user)

    @staticmethod
    def _binds(spec: RunSpec) -> list[tuple[Path, str, bool]]:
        """``(host, container, read_only)`` for every bind of ``spec``.

        Raises:
            InfraError: an extra mount is not absolute, shadows the runner's own paths, or its
                host path does not exist.
        """
        binds = [(spec.workdir, CONTAINER_SRC, True), (spec.run_dir, CONTAINER_OUT, False)]
        if spec.plugin_dir is not None:
            binds.append((spec.plugin_dir, CONTAINER_PLUGIN, True))
        for host, target in spec.mounts.items():
            if not target.startswith("/"):
                raise InfraError(f"mount target {target!r} is not an absolute container path")
            clash = [r for r in RESERVED_TARGETS if _overlaps(target, r)]
            if clash:
                raise InfraError(f"mount target {target!r} would shadow the runner's {clash[0]}")
            if not host.exists():
                raise InfraError(f"mount source {host} does not exist on this host")
            binds.append((host, target, True))
        return binds

    def _path_map(self, spec: RunSpec) -> PathMap:
        return PathMap({host: target for host, target, _ in self._binds(spec)})

    def create_kwargs(self, spec: RunSpec, image_id: str) -> dict[str, Any]:
        """Keyword arguments for ``containers.create``: mounts, remapped argv/env, hardening."""
        binds = self._binds(spec)
        remap = PathMap({host: target for host, target, _ in binds})
        env = {**BASE_ENV, "SCHEDCTL_RUN_ID": spec.run_id, "SCHEDCTL_TIER": spec.tier}
        env.update({key: remap(value) for key, value in spec.env.items()})
        labels = {**spec.labels, LABEL_RUN_ID: spec.run_id, LABEL_TIER: spec.tier}
        if self.instance:
            labels[LABEL_INSTANCE] = self.instance
        kwargs: dict[str, Any] = {
            "image": image_id,
            "command": [remap(arg) for arg in spec.argv],
            "name": self.container_name(spec),
            "labels": labels,
            "environment": env,
            "working_dir": CONTAINER_SRC,
            "user": self.user,
            # As docker.types.Mount makes them (a dict), without importing the SDK.
            "mounts": [
                {
                    "Target": target,
                    "Source": str(host.absolute()),
                    "Type": "bind",
                    "ReadOnly": read_only,
                }
                for host, target, read_only in binds
            ],
            "tmpfs": {"/tmp": f"rw,exec,nosuid,nodev,size={self.tmpfs_size}"},
            "init": True,
            "privileged": False,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "network_mode": "bridge" if spec.network else "none",
            "pids_limit": spec.pids_limit,
        }
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
            kwargs["memswap_limit"] = spec.memory  # equal: a hog is OOM-killed instead of swapping
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        if spec.gpus:
            from docker.types import DeviceRequest

            ids = [gpu.uuid or str(gpu.index) for gpu in spec.gpus]
            kwargs["device_requests"] = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        else:
            # CUDA images set NVIDIA_VISIBLE_DEVICES=all; with the nvidia runtime as the engine's
            # default that would hand every GPU to a run that leased none.
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        return kwargs

    def template(self, spec: RunSpec) -> dict[str, Any]:
        """What the container of ``spec`` is made of, less what only the run has: its
        ``containers.create`` arguments (JSON-able) without the name, the run-id label, the
        command, the run dir's mount sources and the variables no interpreter reads at start-up.
        A prewarmed container (:mod:`runners.docker_prewarm`) is made from it, and serves only a
        run whose template is equal.

        Raises:
            InfraError: a mount is bad (as :meth:`create_kwargs`).
        """
        kwargs = self.create_kwargs(spec, spec.image or self.default_image)
        # The run dir's own mounts are named relative to it (a prewarm mounts its staging dir).
        run_dir = str(spec.run_dir.absolute())
        sources = {run_dir: RUN_DIR_SOURCE, f"{run_dir}/plugin": f"{RUN_DIR_SOURCE}/plugin"}
        mounts = [
            {**dict(mount), "Source": sources.get(mount["Source"], mount["Source"])}
            for mount in kwargs["mounts"]
        ]
        labels = {k: v for k, v in kwargs["labels"].items() if k != LABEL_RUN_ID}
        parts = [p for p in ("schedctl", self.instance, spec.tier, "prewarm") if p]
        prefix = re.sub(r"[^a-zA-Z0-9_.-]", "-", "-".join(parts))
        template = {k: v for k, v in kwargs.items() if k not in ("name", "command")}
        template.update(
            engine=self.address,
            name_prefix=prefix,
            labels=labels,
            mounts=mounts,
            environment=startup_env(kwargs["environment"]),
        )
        return template

    def _remove(self, container: Container) -> None:
        """Always remove; a failure here is a warning and never replaces the run's outcome."""
        try:
            with _map_docker_errors(self.address):
                container.remove(force=True, v=True)
        except InfraError as exc:
            import docker.errors

            if not isinstance(exc.__cause__, docker.errors.NotFound):
                self._log.warning(
                    "container removal failed", container=container.id, error=str(exc)
                )

    @staticmethod
    def _provenance(image: Image, image_name: str) -> dict[str, Any]:
        return {
            "runner": "docker",
            "image": image_name,
            "image_id": image.id,
            "repo_digests": list(image.attrs.get("RepoDigests") or []),
        }

    def _engine_version(self, container: Container) -> str | None:
        """The engine's version for the run's provenance; ``None`` when it does not say.

        Provenance only: an engine that fails to answer here is not the run's failure (the
        supervision that follows notices an engine that is really gone).
        """
        try:
            with _map_docker_errors(self.address):
                version = container.client.version().get("Version")
        except InfraError as exc:
            self._log.warning("docker version unknown", error=str(exc))
            return None
        return str(version) if version is not None else None

    # -- ownership and orphans -------------------------------------------------------------------

    def _remember(self, run_id: str, container_id: str) -> None:
        with self._lock:
            self._containers.setdefault(run_id, set()).add(container_id)
            self._containers.move_to_end(run_id)
            while len(self._containers) > REMEMBERED_RUNS:
                self._containers.popitem(last=False)

    def container_ids(self, run_id: str) -> set[str]:
        """The run's containers: those this runner created for it, and any still labelled so."""
        with self._lock:
            ids = set(self._containers.get(run_id, ()))
        if self._client is None and not ids:
            return ids  # never ran anything here: do not build a client just to ask
        label_filter = [f"{LABEL_RUN_ID}={run_id}"]
        if self.instance:
            label_filter.append(f"{LABEL_INSTANCE}={self.instance}")
        try:
            with _map_docker_errors(self.address):
                found = self.client.containers.list(all=True, filters={"label": label_filter})
                # A prewarmed container keeps its pending run-id label; it is named for the run.
                prewarmed = self.client.containers.list(
                    all=True,
                    filters={"label": [LABEL_RUN_ID, *label_filter[1:]], "name": f"-{run_id}$"},
                )
        except InfraError:
            return ids  # the engine is down: what this runner remembers is all it knows
        ids |= {c.id for c in found}
        for container in prewarmed:
            pending = container.labels.get(LABEL_RUN_ID, "")
            if pending.startswith(PENDING_PREFIX) and container.name.endswith(f"-{run_id}"):
                ids.add(container.id)
        return ids

    def owns(self, pid: int, run_id: str) -> bool:
        """Whether host process ``pid`` lives in one of the run's containers (its cgroup path
        names the container id; NVML and ``/proc`` report host pids)."""
        try:
            cgroup = (self.proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return False
        return any(cid in cgroup for cid in self.container_ids(run_id) if cid)

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Kill and remove our containers whose run is not live; return their run ids.

        Raises:
            EngineDown: the engine does not answer (the caller decides whether that is fatal).
        """
        client = self.client
        label_filter = [LABEL_RUN_ID]
        if self.instance:
            label_filter.append(f"{LABEL_INSTANCE}={self.instance}")
        with _map_docker_errors(self.address):
            found = client.containers.list(all=True, filters={"label": label_filter})
        reaped: set[str] = set()
        for container in found:
            run_id = container.labels.get(LABEL_RUN_ID, "")
            if run_id in live_run_ids or pending_owner_alive(run_id, self.proc_root):
                continue  # a prewarmed container whose owner lives is not an orphan (yet)
            self._log.warning("reaping orphan container", container=container.name, run_id=run_id)
            self._remove(container)  # force-remove kills it first
            reaped.add(run_id)
        return sorted(reaped)
