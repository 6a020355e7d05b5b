"""Builds as runs: recorded, pinned per tier run, falling back to the last good image, retained."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from scheduler.config import Config
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher, RunRequest
from tests.conftest import tier
from tests.scheduler.images.conftest import BuildingRunner, ScriptedBuilder

MakeDispatcher = Callable[[Config], Dispatcher]


def config_for(make_config: Callable[..., Config], project: Path, keep: int = 3) -> Config:
    return make_config(
        project=project,
        runner="docker",
        images={"ci": {"dockerfile": "Dockerfile", "keep": keep}},
        tiers={"hourly": tier(image="@ci")},
    )


def test_build_is_a_recorded_run_and_tiers_use_its_image(
    make_config: Callable[..., Config], dockerfile_project: Path, build_dispatcher: MakeDispatcher
) -> None:
    """A build run is passed with its image; the next tier run uses that exact image and says
    which build made it."""
    dispatcher = build_dispatcher(config_for(make_config, dockerfile_project))
    build = dispatcher.run(RunRequest("image:ci"))
    assert (build.kind, build.outcome, build.image_id) == ("build", Outcome.PASSED, "sha256:fake-1")
    assert build.details["image_build"]["tag"].endswith("/ci:build-1")
    assert [b.run_id for b in dispatcher.store.image_builds("ci")] == [build.id]
    run = dispatcher.run(RunRequest("hourly"))
    runner = dispatcher.runners.get("docker")
    assert isinstance(runner, BuildingRunner)
    assert run.outcome is Outcome.PASSED and runner.specs[-1].image == "sha256:fake-1"
    assert run.image == "sha256:fake-1"
    assert run.details["image_build"] == {
        "recipe": "ci", "build_run_id": build.id, "image_id": "sha256:fake-1", "sha": None,
    }  # fmt: skip


def test_without_a_good_build_the_tier_is_infra_error(
    make_config: Callable[..., Config], dockerfile_project: Path, build_dispatcher: MakeDispatcher
) -> None:
    """No successful build yet: the tier run is infra-error telling how to build one."""
    dispatcher = build_dispatcher(config_for(make_config, dockerfile_project))
    run = dispatcher.run(RunRequest("hourly"))
    assert run.outcome is Outcome.INFRA_ERROR
    assert "image @ci has no successful build yet: run 'schedctl image build ci'" in run.reason


def test_failed_build_keeps_the_last_good_image_and_says_so(
    make_config: Callable[..., Config],
    dockerfile_project: Path,
    build_dispatcher: MakeDispatcher,
    builder: ScriptedBuilder,
) -> None:
    """A failed build is failed with the builder's error line; tiers keep the previous image
    and their run says that the newest build failed."""
    dispatcher = build_dispatcher(config_for(make_config, dockerfile_project))
    good = dispatcher.run(RunRequest("image:ci"))
    builder.fail_with = "ERROR: No matching distribution found for nope"
    bad = dispatcher.run(RunRequest("image:ci"))
    assert bad.outcome is Outcome.FAILED
    assert bad.reason == "image build failed: ERROR: No matching distribution found for nope"
    run = dispatcher.run(RunRequest("hourly"))
    assert run.image == good.image_id
    note = run.details["image_build"]["note"]
    assert f"(run {bad.id}) ended failed" in note and f"build run {good.id}" in note


def test_retention_never_removes_an_image_in_use(
    make_config: Callable[..., Config],
    dockerfile_project: Path,
    build_dispatcher: MakeDispatcher,
    builder: ScriptedBuilder,
) -> None:
    """keep: 1 removes older images, except one an active run recorded and one a container
    holds (the engine refuses)."""
    dispatcher = build_dispatcher(config_for(make_config, dockerfile_project, keep=1))
    store = dispatcher.store
    first = dispatcher.run(RunRequest("image:ci"))
    # A run of another tier still running in the first image (e.g. a long daily run).
    store.create_run(
        tier="daily", kind="pytest", trigger="manual", outcome=Outcome.RUNNING,
        image=first.image_id, host=dispatcher.host, owner_pid=os.getpid(),
        owner_identity=dispatcher.identity,
    )  # fmt: skip
    second = dispatcher.run(RunRequest("image:ci"))
    builder.kept.add(second.details["image_build"]["tag"])  # a container still uses it
    third = dispatcher.run(RunRequest("image:ci"))
    fourth = dispatcher.run(RunRequest("image:ci"))
    present = [b.run_id for b in store.image_builds("ci")]
    assert present == [fourth.id, second.id, first.id]
    assert builder.removed == [third.details["image_build"]["tag"], third.image_id]
