"""A project's declared test dependencies: requirements files, extras, dependency groups.

What a recipe leaves unset is detected here, by convention: ``requirements.txt`` plus the
requirements files whose name says test/dev/ci (in the project root or ``requirements/``),
the ``[project.optional-dependencies]`` extras and PEP 735 ``[dependency-groups]`` named
test/tests/testing/dev. A recipe's explicit list (``[]`` included) always wins.

A lock file in the project root (``pylock.toml``, ``uv.lock`` or ``poetry.lock``, first found
wins) pins every package it names from an index: the pins become pip constraints for both the
host's wheelhouse and the install in the image. Packages from a path, a directory or a VCS are
left to the requirements that name them.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.config import ImageRecipe

# tomllib is 3.11+; tomli (a dependency below 3.11) is the same parser.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
TEST_NAMES = ("test", "tests", "testing", "dev")
_REQUIREMENTS = re.compile(r"^(requirements|[a-z_-]*requirements)[a-z0-9_.-]*\.(txt|in)$")
_TESTISH = re.compile(r"(^|[-_./])(test|tests|testing|dev|ci)([-_./]|$)")
PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
LOCK_FILES = ("pylock.toml", "uv.lock", "poetry.lock")
_NOT_FROM_AN_INDEX = ("directory", "editable", "virtual", "path", "vcs", "git", "url", "archive")


@dataclass(frozen=True)
class TestDeps:
    """What goes into the image: requirement files (relative to the project), extras, groups."""

    __test__ = False  # not a pytest class

    requirements: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    install_project: bool = False
    build_requires: tuple[str, ...] = ()
    """The project's ``[build-system] requires`` (for its editable install in the image)."""
    lock_file: str | None = None
    """The lock file the pins come from (relative to the project)."""
    pins: tuple[str, ...] = ()
    """``name==version`` constraints from the lock file."""


def read_pyproject(project: Path) -> dict[str, Any]:
    path = project / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = _toml.loads(path.read_text())
    except (OSError, _toml.TOMLDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def detect_requirements(project: Path) -> list[str]:
    """``requirements.txt`` and the test/dev/ci requirement files, sorted, relative paths."""
    found: list[str] = []
    for folder in (project, project / "requirements"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix != ".txt":
                continue
            name = path.name.lower()
            in_dir = folder != project
            plain = name == "requirements.txt"
            if plain or ((in_dir or _REQUIREMENTS.match(name)) and _TESTISH.search(name)):
                found.append(str(path.relative_to(project)))
    return found


def locked_pins(project: Path) -> tuple[str, tuple[str, ...]] | None:
    """The first lock file of :data:`LOCK_FILES` and its index packages as ``name==version``."""
    for name in LOCK_FILES:
        path = project / name
        if not path.is_file():
            continue
        try:
            data = _toml.loads(path.read_text())
        except (OSError, _toml.TOMLDecodeError, UnicodeDecodeError):
            return None
        entries = data.get("packages" if name == "pylock.toml" else "package") or []
        pins = {
            f"{entry['name']}=={entry['version']}"
            for entry in entries if isinstance(entry, dict) and _from_an_index(entry)
        }  # fmt: skip
        return name, tuple(sorted(pins))
    return None


def _from_an_index(entry: dict[str, Any]) -> bool:
    if not (isinstance(entry.get("name"), str) and isinstance(entry.get("version"), str)):
        return False
    if any(key in entry for key in ("directory", "vcs", "archive")):  # pylock.toml
        return False
    source = entry.get("source")
    if isinstance(source, dict):  # uv: {registry = ...} | {editable = "."}; poetry: {type = ...}
        kinds = {str(source.get("type", "")), *source}
        return not any(kind in _NOT_FROM_AN_INDEX for kind in kinds)
    return True


def declared_test_deps(project: Path, recipe: ImageRecipe) -> TestDeps:
    """The recipe's dependencies; each list the recipe leaves unset is detected in ``project``."""
    pyproject = read_pyproject(project)
    extras_declared = pyproject.get("project", {}).get("optional-dependencies", {}) or {}
    groups_declared = pyproject.get("dependency-groups", {}) or {}
    requirements = (
        recipe.requirements if recipe.requirements is not None else detect_requirements(project)
    )
    extras = (
        recipe.extras
        if recipe.extras is not None
        else [n for n in TEST_NAMES if n in extras_declared]
    )
    groups = (
        recipe.groups
        if recipe.groups is not None
        else [n for n in TEST_NAMES if n in groups_declared]
    )
    installable = recipe.install_project and any((project / f).is_file() for f in PROJECT_FILES)
    build_system = pyproject.get("build-system", {}) or {}
    requires = build_system.get("requires") or ["setuptools>=40.8.0"]
    lock = locked_pins(project)
    return TestDeps(
        requirements=tuple(requirements),
        extras=tuple(extras),
        groups=tuple(groups),
        install_project=installable,
        build_requires=tuple(str(r) for r in requires) if installable else (),
        lock_file=lock[0] if lock else None,
        pins=lock[1] if lock else (),
    )
