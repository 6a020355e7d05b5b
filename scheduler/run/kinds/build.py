"""The build kind: a run that builds a recipe's test image from the project at the run's commit.

A recipe with ``dockerfile:`` is built from the checkout as it is; a generated recipe first
becomes a build context (:mod:`scheduler.images.generated`: the host's pip fills a wheelhouse),
which builds without network. The image is tagged ``schedctl-<instance>/<recipe>:build-<run>``
and labelled with the recipe, the run and the commit. How it ended -- the image, or the failing
step's error line -- goes to :func:`~scheduler.kernel.outcome.decide` as a ``BuildReport``;
:mod:`scheduler.images.catalog` records a successful build when the ledger publishes it.
"""

from __future__ import annotations

import re
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from runners.base import LOG_FILE, BoundedLog, RunResult
from runners.docker_build import LABEL_BUILD_RUN, LABEL_RECIPE, BuildResult
from scheduler.config import ImageRecipe
from scheduler.images.generated import last_error_line, prepare_context
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import InfraError
from scheduler.kernel.outcome import BuildReport, RunEnding, Termination
from scheduler.run.kinds import Finished, Prepared, RunContext
from scheduler.run.ledger import Evidence


class ImageBuilderLike(Protocol):
    def build(
        self, *, context: Path, dockerfile: str, tag: str, log: BoundedLog,
        cancel: threading.Event, timeout_s: float, labels: dict[str, str] | None = None,
        build_args: dict[str, str] | None = None, target: str | None = None,
        network: bool = True,
    ) -> BuildResult: ...  # fmt: skip


@runtime_checkable
class BuildsImages(Protocol):
    """A runner that can build images (the docker runner)."""

    def image_builder(self) -> ImageBuilderLike: ...


def image_tag(instance: str | None, recipe: str, run_id: int) -> str:
    owner = re.sub(r"[^a-z0-9_.-]", "-", (instance or "local").lower())
    return f"schedctl-{owner}/{recipe}:build-{run_id}"


class BuildKind:
    name = "build"

    def prepare(self, ctx: RunContext) -> Prepared:
        recipe_name, recipe = ctx.config.recipe_of(ctx.tier_name)
        runner = ctx.runner
        tag = image_tag(getattr(runner, "instance", None), recipe_name, ctx.run_id)

        def execute(cancel: threading.Event) -> Finished:
            started = utcnow()
            with BoundedLog(ctx.run_dir / LOG_FILE, ctx.config.log_limit_bytes) as log:
                try:
                    if not isinstance(runner, BuildsImages):
                        raise InfraError(
                            f"runner {runner.alias!r} cannot build images (docker can)"
                        )
                    result = _build(
                        ctx, recipe_name, recipe, runner.image_builder(), tag, log, cancel
                    )
                except InfraError as exc:
                    log.write(f"[schedctl] {exc}\n".encode())
                    result = BuildResult(Termination.INFRA, error=str(exc))
                truncated = log.truncated
            return _finished(result, started, truncated, recipe_name, tag, ctx)

        provenance = {"runner": runner.alias, "image": tag, "argv": []}
        return Prepared(provenance, execute)


def _build(
    ctx: RunContext,
    recipe_name: str,
    recipe: ImageRecipe,
    builder: ImageBuilderLike,
    tag: str,
    log: BoundedLog,
    cancel: threading.Event,
) -> BuildResult:
    labels = {LABEL_RECIPE: recipe_name, LABEL_BUILD_RUN: str(ctx.run_id)}

    def build(context: Path, dockerfile: str, network: bool) -> BuildResult:
        return builder.build(
            context=context, dockerfile=dockerfile, tag=tag, log=log, cancel=cancel,
            timeout_s=ctx.effective_timeout_s, labels=labels,
            build_args=dict(recipe.build_args), target=recipe.target, network=network,
        )  # fmt: skip

    if recipe.dockerfile is not None:
        context = (ctx.workdir / recipe.context).resolve()
        dockerfile = str((ctx.workdir / recipe.dockerfile).resolve())
        if not context.is_dir() or not Path(dockerfile).is_file():
            missing = recipe.context if not context.is_dir() else recipe.dockerfile
            return BuildResult(Termination.EXITED, error=f"{missing} is not in the project")
        return build(context, dockerfile, network=True)
    with tempfile.TemporaryDirectory(prefix="build-context-", dir=ctx.run_dir) as tmp:
        prepared = prepare_context(
            recipe_name=recipe_name, recipe=recipe, project=ctx.workdir, context=Path(tmp),
            log=log, cancel=cancel, timeout_s=ctx.effective_timeout_s,
        )  # fmt: skip
        if cancel.is_set():
            return BuildResult(Termination.CANCELLED)
        if prepared.error:
            log.write(f"[schedctl] {prepared.error}\n".encode())
            return BuildResult(Termination.EXITED, error=prepared.error)
        result = build(prepared.context, "Dockerfile", network=False)
    if result.error and result.image_id is None:
        # docker says only "The command ... returned a non-zero code"; pip's line says why.
        tail = ctx.run_dir.joinpath(LOG_FILE).read_bytes()[-64 * 1024 :]
        cause = last_error_line(tail.decode("utf-8", errors="replace").splitlines())
        if cause and cause != result.error:
            return BuildResult(result.termination, error=cause)
    return result


def _finished(
    result: BuildResult, started: datetime, truncated: bool, recipe: str, tag: str, ctx: RunContext
) -> Finished:
    finished_at = utcnow()
    exit_code = (
        None if result.termination is not Termination.EXITED else (0 if result.image_id else 1)
    )
    provenance = {"recipe": recipe, "tag": tag}
    if result.image_id:
        provenance.update(image_id=result.image_id, digest=result.digest or result.image_id)
    run_result = RunResult(
        result.termination, exit_code, started, finished_at, result.error, truncated, provenance,
    )  # fmt: skip
    ending = RunEnding(
        termination=result.termination,
        exit_code=exit_code,
        message=result.error,
        build=BuildReport(result.image_id, result.error),
    )
    return Finished(ending, Evidence(run_result, details={"image_build": provenance}))
