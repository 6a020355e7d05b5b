"""Source tests run against real git repositories made in tmp dirs: the builders and fixtures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.config import ProjectConfig
from scheduler.source import Source

AUTHOR = "Tess Ter <tess@example.com>"


def git(cwd: Path, *args: str) -> str:
    """Run git as a developer would (an author set), returning stdout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    cmd = ["git", "-c", "user.name=Tess Ter", "-c", "user.email=tess@example.com", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(repo: Path, message: str, **files: str) -> str:
    """Write ``files`` into ``repo``, commit them, return the new SHA."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class History:
    """A work repository on ``main`` with commit A (green) and then commit B (breaks it)."""

    work: Path
    a: str
    b: str


@pytest.fixture
def history(tmp_path: Path) -> History:
    """Commit A adds value.txt=A and sub/test_x.py; commit B changes value.txt to B."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    a = commit(work, "add feature", **{"value.txt": "A", "sub/test_x.py": "X = 1\n"})
    git(work, "tag", "v1")
    b = commit(work, "break feature", **{"value.txt": "B"})
    return History(work, a, b)


@pytest.fixture
def upstream(tmp_path: Path, history: History) -> Path:
    """A bare repository holding ``history`` (its HEAD on main), as a remote would."""
    bare = tmp_path / "upstream.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(history.work, "push", "-q", "--tags", str(bare), "main")
    return bare


def make_source(
    state: Path,
    *,
    path: Path | None = None,
    repo: str | None = None,
    branch: str | None = None,
    clock: Callable[[], datetime] | None = None,
    sleeps: list[float] | None = None,
) -> Source:
    """A Source with instant retries (recorded in ``sleeps``) and no fetch reuse."""
    project = ProjectConfig(path=path, repo=repo, branch=branch, fetch_timeout=20)
    return Source(
        project,
        state,
        clock=clock or (lambda: datetime.now(timezone.utc)),
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
        retry_delays=(0.0, 0.0),
        fetch_reuse=timedelta(0),
        op_timeout=20,
    )


def worktree_paths(repo_args: list[str]) -> list[str]:
    """The paths ``git worktree list`` reports for a repository."""
    out = subprocess.run(
        ["git", *repo_args, "worktree", "list", "--porcelain"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]
