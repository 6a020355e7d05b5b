"""Image recipes: config, the build tiers they become, detected test deps, and build outcomes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.config import Config, ImageRecipe
from scheduler.images.declared import declared_test_deps, detect_requirements
from scheduler.images.generated import CONSTRAINTS_FILE, install_args, last_error_line
from scheduler.kernel.errors import ConfigError, UnknownTierError
from scheduler.kernel.outcome import BuildReport, Decision, Outcome, RunEnding, Termination, decide
from tests.conftest import tier


class TestConfig:
    """images: in config.yaml."""

    def test_each_recipe_becomes_a_build_tier(self, make_config: Callable[..., Config]) -> None:
        """A recipe fires as tier image:NAME with its schedule, kind build and the docker runner."""
        config = make_config(images={"ci": {"schedule": "0 7 * * *", "keep": 2}})
        build = config.tier("image:ci")
        assert (build.kind, build.schedule, build.runner, build.network) == (
            "build", "0 7 * * *", "docker", True,
        )  # fmt: skip
        assert config.recipe_of("image:ci") == ("ci", config.images["ci"])
        with pytest.raises(UnknownTierError):
            config.recipe_of("hourly")

    def test_unknown_recipe_reference_names_the_key(
        self, make_config: Callable[..., Config]
    ) -> None:
        """tiers.T.image: '@nope' is a config error naming the key and the known recipes."""
        with pytest.raises(ConfigError, match=r"tiers\.hourly\.image: '@nope' names no recipe"):
            make_config(tiers={"hourly": tier(image="@nope")}, images={"ci": {}})

    def test_build_kind_is_not_a_user_tier(self, make_config: Callable[..., Config]) -> None:
        """kind: build under tiers: is refused: builds are declared under images:."""
        with pytest.raises(ConfigError, match="'build' tiers come from images:"):
            make_config(tiers={"hourly": tier(kind="build")})

    def test_dockerfile_recipe_takes_no_generated_keys(
        self, make_config: Callable[..., Config]
    ) -> None:
        """A recipe is either the project's Dockerfile or generated, never both."""
        with pytest.raises(ConfigError, match="takes no requirements"):
            make_config(images={"ci": {"dockerfile": "Dockerfile", "extras": ["test"]}})


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
[project]
name = "p"
version = "1"
[project.optional-dependencies]
test = ["six"]
docs = ["sphinx"]
[dependency-groups]
dev = ["pytest"]
lint = ["ruff"]
"""


class TestDeclaredDeps:
    """What goes into a generated image when the recipe leaves it to the project."""

    def test_detects_test_requirement_files_extras_and_groups(self, tmp_path: Path) -> None:
        """requirements.txt + test/dev files; extras and groups named test/dev; not docs/lint."""
        root = project(
            tmp_path,
            {
                "pyproject.toml": PYPROJECT,
                "requirements.txt": "",
                "requirements-test.txt": "",
                "requirements-docs.txt": "",
                "requirements/ci.txt": "",
            },
        )
        deps = declared_test_deps(root, ImageRecipe())
        assert deps.requirements == (
            "requirements-test.txt", "requirements.txt", "requirements/ci.txt",
        )  # fmt: skip
        assert (deps.extras, deps.groups) == (("test",), ("dev",))
        assert deps.install_project and deps.build_requires == ("hatchling",)
        assert install_args(deps) == [
            "-r", "requirements-test.txt", "-r", "requirements.txt", "-r", "requirements/ci.txt",
            "--group", "dev", "-e", ".[test]",
        ]  # fmt: skip

    def test_explicit_lists_win_even_when_empty(self, tmp_path: Path) -> None:
        """requirements: [] and extras: [] mean none, whatever the project declares."""
        root = project(tmp_path, {"pyproject.toml": PYPROJECT, "requirements.txt": ""})
        recipe = ImageRecipe(requirements=[], extras=[], groups=["lint"])
        deps = declared_test_deps(root, recipe)
        assert (deps.requirements, deps.extras, deps.groups) == ((), (), ("lint",))

    def test_a_bare_test_folder_installs_no_project(self, tmp_path: Path) -> None:
        """Without pyproject.toml/setup.py there is nothing to install editable."""
        root = project(tmp_path, {"tests/test_x.py": "", "requirements-dev.txt": ""})
        deps = declared_test_deps(root, ImageRecipe())
        assert not deps.install_project and install_args(deps) == ["-r", "requirements-dev.txt"]
        assert detect_requirements(root) == ["requirements-dev.txt"]


class TestBuildOutcome:
    """decide() for build runs."""

    @pytest.mark.parametrize(
        ("report", "outcome", "reason"),
        [
            (BuildReport("sha256:abc"), Outcome.PASSED, "built image sha256:abc"),
            (
                BuildReport(error="ERROR: No matching distribution found for nope"),
                Outcome.FAILED,
                "image build failed: ERROR: No matching distribution found for nope",
            ),
        ],
        ids=["built", "pip-error"],
    )
    def test_build_report_decides(self, report: BuildReport, outcome: Outcome, reason: str) -> None:
        """An image is passed; a failed step is failed with its error line as the reason."""
        ending = RunEnding(Termination.EXITED, 0 if report.image_id else 1, build=report)
        assert decide(ending) == Decision(outcome, reason)

    def test_engine_trouble_is_infra(self) -> None:
        """A build the engine could not run at all is infra-error, not failed."""
        ending = RunEnding(
            Termination.INFRA, None, "docker engine not answering", build=BuildReport()
        )
        assert decide(ending).outcome is Outcome.INFRA_ERROR

    @pytest.mark.parametrize(
        ("lines", "expected"),
        [
            (["Collecting x", "ERROR: No matching distribution found for x", "done"],
             "ERROR: No matching distribution found for x"),
            (["Step 3/9", "AssertionError: the base image has Python 3.12"],
             "AssertionError: the base image has Python 3.12"),
            (["all fine"], ""),
        ],
        ids=["pip", "python", "none"],
    )  # fmt: skip
    def test_last_error_line(self, lines: list[str], expected: str) -> None:
        """The reason is pip's (or Python's) own error line, not docker's generic one."""
        assert last_error_line(lines) == expected


class TestLockFiles:
    """A lock file pins every index package it names, as pip constraints (host and image)."""

    UV_LOCK = """\
version = 1
[[package]]
name = "attrs"
version = "24.2.0"
source = { registry = "https://pypi.org/simple" }
[[package]]
name = "myproject"
version = "0.1.0"
source = { editable = "." }
[[package]]
name = "from-git"
version = "1.0"
source = { git = "https://example.invalid/x.git" }
"""
    POETRY_LOCK = """\
[[package]]
name = "pluggy"
version = "1.5.0"
[[package]]
name = "local-dep"
version = "0.0.1"
[package.source]
type = "directory"
url = "../local-dep"
"""
    PYLOCK = """\
lock-version = "1.0"
[[packages]]
name = "iniconfig"
version = "2.0.0"
[[packages]]
name = "myproject"
version = "0.1.0"
directory = { path = "." }
"""

    @pytest.mark.parametrize(
        ("name", "text", "pins"),
        [
            ("uv.lock", UV_LOCK, ("attrs==24.2.0",)),
            ("poetry.lock", POETRY_LOCK, ("pluggy==1.5.0",)),
            ("pylock.toml", PYLOCK, ("iniconfig==2.0.0",)),
        ],
    )
    def test_index_packages_are_pinned(
        self, tmp_path: Path, name: str, text: str, pins: tuple[str, ...]
    ) -> None:
        root = project(tmp_path, {"pyproject.toml": PYPROJECT, name: text})
        deps = declared_test_deps(root, ImageRecipe())
        assert (deps.lock_file, deps.pins) == (name, pins)
        assert install_args(deps)[:2] == ["-c", CONSTRAINTS_FILE]

    def test_no_lock_file_no_constraints(self, tmp_path: Path) -> None:
        deps = declared_test_deps(project(tmp_path, {"pyproject.toml": PYPROJECT}), ImageRecipe())
        assert deps.pins == () and "-c" not in install_args(deps)

    def test_an_unreadable_lock_file_pins_nothing(self, tmp_path: Path) -> None:
        root = project(tmp_path, {"pyproject.toml": PYPROJECT, "uv.lock": "[[package]\nbroken"})
        assert declared_test_deps(root, ImageRecipe()).pins == ()
