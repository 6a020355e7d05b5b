"""Build and remove test images on the host's Docker engine: the build kind's one docker boundary.

:class:`DockerImageBuilder` streams ``docker build`` (the SDK's low-level API) into the run's
bounded log and returns what came of it: the image id, or the builder's own error line. A step
that fails in the Dockerfile is the build's result (``failed``); an engine that cannot build at
all raises :class:`~scheduler.kernel.errors.InfraError` through :func:`_map_docker_errors`.
Images are never pushed: there is no registry, so an image's digest is its content id.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from runners.base import BoundedLog
from runners.docker_support import _map_docker_errors, engine_address
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import Termination

LABEL_RECIPE = "schedctl.image-recipe"
LABEL_BUILD_RUN = "schedctl.build-run"
LABEL_SHA = "schedctl.sha"


@dataclass(frozen=True)
class BuildResult:
    """How a build ended: ``image_id`` when it produced one, else the builder's error line."""

    termination: Termination
    image_id: str | None = None
    digest: str | None = None
    error: str = ""


class DockerImageBuilder:
    """Builds images from a context directory and removes them; never pulls, never pushes.

    Args:
        client: Docker SDK client (the docker runner's).
        clock: monotonic clock for the build's deadline.
    """

    def __init__(
        self, client: docker.DockerClient, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.address = engine_address(client)
        self._clock = clock

    def build(
        self,
        *,
        context: Path,
        dockerfile: str,
        tag: str,
        log: BoundedLog,
        cancel: threading.Event,
        timeout_s: float,
        labels: Mapping[str, str] | None = None,
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        network: bool = True,
    ) -> BuildResult:
        """``docker build`` of ``context`` into ``tag``; the output goes to ``log``.

        The deadline and ``cancel`` are checked between the engine's messages; a stopped build
        closes its stream, which makes the engine abandon it.
        """
        deadline = self._clock() + timeout_s
        with _map_docker_errors(self.address):
            stream = self.client.api.build(
                path=str(context), dockerfile=dockerfile, tag=tag, labels=dict(labels or {}),
                buildargs=dict(build_args or {}), target=target, rm=True, forcerm=True,
                pull=False, decode=True, network_mode=None if network else "none",
            )  # fmt: skip
            image_id: str | None = None
            error = ""
            with contextlib.closing(stream):
                for message in _messages(stream):
                    if cancel.is_set():
                        return BuildResult(Termination.CANCELLED)
                    if self._clock() > deadline:
                        return BuildResult(
                            Termination.TIMEOUT, error=f"build exceeded {timeout_s:g}s"
                        )
                    text = str(message.get("stream") or message.get("status") or "")
                    if text:
                        log.write(text.encode())
                    if "error" in message:
                        error = str(message["error"]).strip()
                        log.write(f"{error}\n".encode())
                    aux = message.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        image_id = str(aux["ID"])
            if error or image_id is None:
                return BuildResult(Termination.EXITED, error=error or "the engine built no image")
            image = self.client.images.get(image_id)
            digests = image.attrs.get("RepoDigests") or []
        return BuildResult(
            Termination.EXITED, image_id=image.id, digest=digests[0] if digests else image.id
        )

    def remove(self, image: str) -> str | None:
        """Remove ``image`` (a tag or an id) unless a container still uses it.

        Returns ``None`` when it is gone (or already was), else why it was kept.
        """
        try:
            with _map_docker_errors(self.address):
                try:
                    self.client.images.remove(image, force=False, noprune=False)
                except docker.errors.ImageNotFound:
                    return None
                except docker.errors.APIError as exc:
                    if exc.status_code == 409:
                        return f"kept: {exc.explanation or exc}"
                    raise
        except InfraError as exc:
            return f"kept: {exc}"
        return None

    def exists(self, image: str) -> bool:
        with _map_docker_errors(self.address):
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                return False
        return True


def _messages(stream: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for message in stream:
        if isinstance(message, dict):
            yield message
