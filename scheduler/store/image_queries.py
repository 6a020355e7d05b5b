"""Test images built by ``kind: build`` runs (``image_builds``): one row per successful build.

A row names the image a recipe's build produced; ``removed_at`` is set once retention removed
the image from the engine. ``@recipe`` in a tier resolves to the newest row still present.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from scheduler.store.base import QueryBase, aware
from scheduler.store.schema import ACTIVE_OUTCOMES, image_builds, runs

__all__ = ["ImageBuild", "ImageQueries"]


@dataclass(frozen=True)
class ImageBuild:
    run_id: int
    recipe: str
    image_id: str
    tag: str | None
    digest: str | None
    sha: str | None
    built_at: datetime
    removed_at: datetime | None = None


class ImageQueries(QueryBase):
    """``image_builds``: written once per successful build, read to resolve ``@recipe``."""

    def record_image_build(self, build: ImageBuild) -> None:
        with self.begin() as conn:
            conn.execute(
                image_builds.insert().values(
                    run_id=build.run_id, recipe=build.recipe, image_id=build.image_id,
                    tag=build.tag, digest=build.digest, sha=build.sha, built_at=build.built_at,
                )
            )  # fmt: skip

    def image_builds(self, recipe: str, *, present_only: bool = True) -> list[ImageBuild]:
        """A recipe's builds, newest first; ``present_only`` skips those whose image is removed."""
        query = sa.select(image_builds).where(image_builds.c.recipe == recipe)
        if present_only:
            query = query.where(image_builds.c.removed_at.is_(None))
        with self.begin() as conn:
            rows = conn.execute(query.order_by(image_builds.c.run_id.desc())).mappings().all()
        return [ImageBuild(**{k: aware(v) for k, v in row.items()}) for row in rows]

    def latest_image_build(self, recipe: str) -> ImageBuild | None:
        builds = self.image_builds(recipe)
        return builds[0] if builds else None

    def image_build_of_run(self, run_id: int) -> ImageBuild | None:
        with self.begin() as conn:
            row = (
                conn.execute(sa.select(image_builds).where(image_builds.c.run_id == run_id))
                .mappings()
                .first()
            )
        return ImageBuild(**{k: aware(v) for k, v in row.items()}) if row else None

    def mark_image_removed(self, run_id: int, at: datetime) -> None:
        with self.begin() as conn:
            conn.execute(
                image_builds.update().where(image_builds.c.run_id == run_id).values(removed_at=at)
            )

    def images_in_use(self) -> set[str]:
        """Image names and ids recorded on active (queued/running) runs."""
        with self.begin() as conn:
            rows = conn.execute(
                sa.select(runs.c.image, runs.c.image_id).where(runs.c.outcome.in_(ACTIVE_OUTCOMES))
            ).all()
        return {value for row in rows for value in row if value}
