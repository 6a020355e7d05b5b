"""Pick the runner backend by name from config; ``auto`` prefers Docker when the engine answers.

The factory also speaks for all the runners it built: whose process is this (:meth:`owns`), and
reap what dead runs left behind (:meth:`reap_orphans`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from runners.base import Runner
from runners.local import LocalRunner
from runners.prewarm import Prewarm, instance_of
from scheduler.kernel.errors import InfraError

if TYPE_CHECKING:
    from runners.docker_prewarm import DockerPrewarm

log = structlog.get_logger("schedctl.runners")

BACKENDS: dict[str, str] = {
    "local": "runners.local:LocalRunner",
    "docker": "runners.docker:DockerRunner",
    "fake": "runners.fake:FakeRunner",
    "slurm": "runners.slurm:SlurmRunner",
}


def _load(name: str, options: dict[str, object]) -> Runner:
    module_name, _, attr = BACKENDS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise TypeError(f"{BACKENDS[name]} is not a Runner")
    runner: Runner = cls(**options)
    return runner


def docker_probe() -> tuple[bool, str]:
    try:
        module = importlib.import_module("runners.docker")
    except ImportError as exc:
        return False, f"docker runner unavailable: {exc}"
    ok, reason = module.docker_available()
    return bool(ok), str(reason)


class RunnerFactory:
    """Builds each backend once and reuses it; tests inject their own instances."""

    def __init__(
        self,
        instances: dict[str, Runner] | None = None,
        probe: Callable[[], tuple[bool, str]] = docker_probe,
        instance: str | None = None,
        *,
        docker_user: str | None = None,
        local_user: str | None = None,
        local_prewarm: Prewarm | None = None,
        docker_prewarm: DockerPrewarm | None = None,
    ) -> None:
        self._instances: dict[str, Runner] = dict(instances or {})
        self._probe = probe
        # Processes are tagged, containers named, and both reaped per daemon instance (a hash of
        # its state dir), so two daemons or test sessions on one host never touch each other's.
        self._options: dict[str, dict[str, object]] = {
            "docker": {"instance": instance},
            "local": {"instance": instance},
            "slurm": {"instance": instance},
        }
        if docker_user is not None:
            self._options["docker"]["user"] = docker_user
        if local_user is not None:
            self._options["local"]["user"] = local_user
        if local_prewarm is not None:
            # A launcher `schedctl run` started early: the local runner's run uses it if it fits.
            self._options["local"]["prewarm"] = local_prewarm
        if docker_prewarm is not None:
            # A container `schedctl run` started early: the docker runner's run uses it if it fits.
            self._options["docker"]["prewarm"] = docker_prewarm
        self._lock = threading.Lock()

    def resolve(self, name: str) -> str:
        if name != "auto":
            return name
        if "auto" in self._instances:
            return "auto"
        ok, reason = self._probe()
        if ok:
            return "docker"
        log.warning(
            "runner_fallback_to_local",
            reason=reason,
            detail="runner: auto found no Docker engine; tests run UNCONTAINED on this host",
        )
        return "local"

    def get(self, name: str) -> Runner:
        resolved = self.resolve(name)
        with self._lock:
            if resolved not in self._instances:
                self._instances[resolved] = _load(resolved, self._options.get(resolved, {}))
            return self._instances[resolved]

    def prepare(self, names: set[str]) -> None:
        """Build the configured backends now (so orphan reaping reaches them at start-up)."""
        for name in sorted(names):
            try:
                self.get(name)
            except (InfraError, ImportError) as exc:
                log.warning("runner_unavailable", runner=name, reason=str(exc))

    def _built(self) -> list[Runner]:
        with self._lock:
            return list({id(r): r for r in self._instances.values()}.values())

    def reap_orphans(self, live_run_ids: set[str]) -> list[str]:
        """Every built runner's :meth:`Runner.reap_orphans`; the run ids reaped, sorted."""
        reaped: set[str] = set()
        for runner in self._built():
            try:
                reaped.update(runner.reap_orphans(live_run_ids))
            except InfraError as exc:
                log.warning("reap_failed", runner=runner.alias, reason=str(exc))
        return sorted(reaped)

    def owns(self, pid: int, run_id: str) -> bool:
        """Whether any built runner says ``pid`` belongs to run ``run_id``."""
        return any(runner.owns(pid, run_id) for runner in self._built())

    def close(self) -> None:
        with self._lock:
            for runner in self._instances.values():
                runner.close()


__all__ = ["BACKENDS", "LocalRunner", "RunnerFactory", "docker_probe", "instance_of"]
