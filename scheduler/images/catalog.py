"""The catalog of built images: records successful builds, resolves ``@recipe``, removes old images.

:class:`ImageCatalog` listens for ``RunFinished``: a passed ``build`` run becomes an
``image_builds`` row, then the recipe's images beyond its newest ``keep`` are removed -- never one
that an active run recorded as its image, and never one a container still uses (the engine
refuses: ``409``). :func:`resolve_image` turns a tier's ``image: "@recipe"`` into the newest
present build, and says so when a newer build of the recipe did not pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from scheduler.config import BUILD_TIER_PREFIX, Config, TierConfig
from scheduler.kernel.clock import Clock, utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.events import Event, RunFinished
from scheduler.kernel.outcome import Outcome

if TYPE_CHECKING:  # `schedctl run` resolves `@recipe` images without importing SQLAlchemy
    from scheduler.store.engine import ImageBuild, Store

log = structlog.get_logger("schedctl.images")


class ImageRemover(Protocol):
    def remove(self, image: str) -> str | None:
        """Remove ``image``; ``None`` when it is gone, else why it was kept."""
        ...


@dataclass(frozen=True)
class ResolvedImage:
    """The image a run of ``@recipe`` uses, the build that made it, and any caveat."""

    recipe: str
    build: ImageBuild
    note: str = ""

    def details(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "build_run_id": self.build.run_id,
            "image_id": self.build.image_id, "sha": self.build.sha,
            **({"note": self.note} if self.note else {}),
        }  # fmt: skip


def image_ref(config: Config, tier: TierConfig) -> str | None:
    """The recipe a tier's image names (``@recipe``), else ``None``."""
    image = tier.image or config.image
    return image[1:] if tier.kind != "build" and image.startswith("@") else None


def resolve_image(store: Store, recipe: str) -> ResolvedImage:
    """The newest present build of ``recipe``.

    Raises:
        InfraError: the recipe has no successful build whose image is still present.
    """
    build = store.latest_image_build(recipe)
    if build is None:
        raise InfraError(
            f"image @{recipe} has no successful build yet: run 'schedctl image build {recipe}'"
        )
    note = ""
    last = store.last_run(BUILD_TIER_PREFIX + recipe)
    failed = last is not None and last.outcome.is_final and last.outcome is not Outcome.PASSED
    if last is not None and failed and last.id > build.run_id:
        note = (
            f"the latest build of @{recipe} (run {last.id}) ended {last.outcome.value}: "
            f"{last.reason}; using the image of build run {build.run_id}"
        )
    return ResolvedImage(recipe, build, note)


class ImageCatalog:
    """A ``RunFinished`` listener: records successful builds and applies retention."""

    def __init__(
        self,
        config: Config,
        store: Store,
        remover: Callable[[], ImageRemover | None],
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self._remover = remover
        self._clock = clock

    def __call__(self, event: Event) -> None:
        if not isinstance(event, RunFinished) or event.outcome is not Outcome.PASSED:
            return
        record = event.record
        if record is None or record.kind != "build" or not record.image_id:
            return
        from scheduler.store.engine import ImageBuild

        recipe = record.tier.removeprefix(BUILD_TIER_PREFIX)
        build = record.details.get("image_build", {})
        self.store.record_image_build(
            ImageBuild(
                run_id=record.id, recipe=recipe, image_id=record.image_id,
                tag=build.get("tag"), digest=build.get("digest"), sha=record.sha,
                built_at=record.finished_at or self._clock(),
            )
        )  # fmt: skip
        self.prune(recipe)

    def prune(self, recipe: str) -> list[int]:
        """Remove images beyond the newest ``keep`` of a recipe unless in use; their build runs."""
        spec = self.config.images.get(recipe)
        keep = spec.keep if spec is not None else 3
        old = self.store.image_builds(recipe)[keep:]
        if not old:
            return []
        remover = self._remover()
        if remover is None:
            return []
        removed = []
        in_use = self.store.images_in_use()
        for build in old:
            if {build.image_id, build.tag} & in_use:
                log.info("image_kept_in_use", recipe=recipe, run_id=build.run_id)
                continue
            why = remover.remove(build.tag or build.image_id)
            if why is None and build.tag:
                why = remover.remove(build.image_id)  # other tags (a manual retag) keep it alive
            if why is not None:
                log.info("image_kept", recipe=recipe, run_id=build.run_id, reason=why)
                continue
            self.store.mark_image_removed(build.run_id, self._clock())
            removed.append(build.run_id)
        return removed
