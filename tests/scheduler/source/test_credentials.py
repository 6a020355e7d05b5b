"""Repository credentials never reach the disk (issue 20, finding 8): a private repository on a
real HTTP server with basic auth, cloned, fetched and checked out through the URL's token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.kernel.errors import SourceError
from tests.scheduler.source.conftest import History, commit, git, make_source
from tests.scheduler.source.git_http import git_http_server

TOKEN = "tok-SECRET-7c1e9a42"


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


def test_token_in_the_url_is_used_but_never_written(
    tmp_path: Path, history: History, upstream: Path
) -> None:
    """Clone, a later fetch (a new commit) and a checkout all authenticate, and no file under
    the state dir (mirror config, FETCH_HEAD, packed refs, worktrees) holds the token."""
    state = tmp_path / "state"
    with git_http_server(upstream.parent, "ci", TOKEN) as base:
        url = f"{base.replace('http://', f'http://ci:{TOKEN}@')}/{upstream.name}"
        source = make_source(state, repo=url)
        assert source.resolve(None) == history.b
        newer = commit(history.work, "newer", **{"value.txt": "C"})
        git(history.work, "push", "-q", str(upstream), "main")
        assert source.resolve(None) == newer  # the fetch authenticated too
        checkout = source.checkout(history.a, 1)
        assert (checkout.path / "value.txt").read_text() == "A"
    assert (state / "source" / "mirror.git" / "config").is_file()
    assert files_holding(state, TOKEN.encode()) == []


def test_wrong_token_fails_without_showing_it(
    tmp_path: Path, history: History, upstream: Path
) -> None:
    """A refused password is an error that names neither the good nor the sent token."""
    with git_http_server(upstream.parent, "ci", TOKEN) as base:
        url = f"{base.replace('http://', 'http://ci:wrong-XYZ-secret@')}/{upstream.name}"
        with pytest.raises(SourceError) as info:
            make_source(tmp_path / "state", repo=url).resolve(None)
    assert "wrong-XYZ-secret" not in str(info.value) and TOKEN not in str(info.value)
    assert files_holding(tmp_path / "state", b"wrong-XYZ-secret") == []
