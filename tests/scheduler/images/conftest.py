"""A dispatcher whose docker runner builds images through a scripted builder (no engine)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runners.base import BoundedLog
from runners.docker_build import BuildResult
from runners.fake import FakeRunner
from scheduler.config import Config
from scheduler.images.catalog import ImageCatalog
from scheduler.kernel.outcome import Termination
from scheduler.run.dispatch import Dispatcher
from tests.scheduler.conftest import FakeDispatcher


@dataclass
class ScriptedBuilder:
    """Builds succeed (``sha256:fake-N``) unless ``fail_with`` is set; removals are recorded."""

    fail_with: str = ""
    built: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)

    def build(
        self, *, context: Path, dockerfile: str, tag: str, log: BoundedLog,
        cancel: threading.Event, timeout_s: float, **_: Any,
    ) -> BuildResult:  # fmt: skip
        log.write(f"building {tag} from {dockerfile}\n".encode())
        if self.fail_with:
            log.write(f"{self.fail_with}\n".encode())
            return BuildResult(Termination.EXITED, error=self.fail_with)
        image_id = f"sha256:fake-{len(self.built) + 1}"
        self.built.append(image_id)
        return BuildResult(Termination.EXITED, image_id=image_id, digest=image_id)

    def remove(self, image: str) -> str | None:
        if image in self.kept:
            return "kept: image is being used by a running container"
        self.removed.append(image)
        return None


class BuildingRunner(FakeRunner):
    """The fake runner, in a container, with an image builder (as the docker runner has)."""

    in_container = True

    def __init__(self, builder: ScriptedBuilder) -> None:
        super().__init__()
        self.builder = builder

    def image_builder(self) -> ScriptedBuilder:
        return self.builder


@pytest.fixture
def builder() -> ScriptedBuilder:
    return ScriptedBuilder()


@pytest.fixture
def dockerfile_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM schedctl-base:bookworm\n")
    return root


@pytest.fixture
def build_dispatcher(
    fake_dispatcher: FakeDispatcher, builder: ScriptedBuilder
) -> Callable[[Config], Dispatcher]:
    """A dispatcher over :class:`BuildingRunner` with the image catalog listening."""

    def make(config: Config) -> Dispatcher:
        dispatcher = fake_dispatcher(config, BuildingRunner(builder))
        dispatcher.add_listener(ImageCatalog(config, dispatcher.store, lambda: builder))
        return dispatcher

    return make
