"""Checking a ref out for a run: detached worktrees, the work tree as is, provenance."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scheduler.kernel.errors import SourceError, UnknownRefError
from scheduler.source import Checkout
from scheduler.source.git import Git, GitResult
from tests.scheduler.source.conftest import (
    AUTHOR,
    History,
    commit,
    git,
    make_source,
    worktree_paths,
)


class TestCheckout:
    """project.path pointing at a git work tree."""

    def test_checkout_ref_a_while_branch_is_at_b(self, tmp_path: Path, history: History) -> None:
        """--ref A gives a detached worktree with A's files; the work tree stays at B."""
        source = make_source(tmp_path / "state", path=history.work)
        co = source.checkout(history.a, "7")
        assert co.is_worktree and co.sha == history.a and co.ref == history.a
        assert (co.path / "value.txt").read_text() == "A"
        assert (history.work / "value.txt").read_text() == "B"
        assert co.path.parent == tmp_path / "state" / "worktrees"
        assert co.path.name == f"7-{history.a[:12]}"
        assert (co.subject, co.author) == ("add feature", AUTHOR)

    def test_working_tree_as_is_with_dirty_note(self, tmp_path: Path, history: History) -> None:
        """No ref tests the path itself at HEAD; uncommitted changes are called out in the note."""
        source = make_source(tmp_path / "state", path=history.work)
        clean = source.checkout(None, 1)
        assert (clean.path, clean.sha, clean.is_worktree, clean.note) == (
            history.work,
            history.b,
            False,
            "",
        )
        (history.work / "value.txt").write_text("edited")
        assert "uncommitted changes" in source.checkout(None, 2).note

    def test_head_moving_between_status_and_show_names_the_status_commit(
        self, tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """status and show run at once; should HEAD move between them (show still saw A, status
        already B), the checkout names the commit status saw, shown again -- never a mix."""
        run_together = Git.run_together

        def racing(self: Git, calls: list[list[str]], **kwargs: Any) -> list[GitResult]:
            status, _ = run_together(self, calls, **kwargs)
            shown_a = run_together(self, [[*calls[1][:-2], history.a, "--"]], **kwargs)[0]
            return [status, shown_a]

        monkeypatch.setattr(Git, "run_together", racing)
        co = make_source(tmp_path / "state", path=history.work).checkout(None, 1)
        assert (co.sha, co.subject) == (history.b, "break feature")

    def test_subdirectory_project_keeps_its_place(self, tmp_path: Path, history: History) -> None:
        """A project path inside a larger repository maps to that subdirectory of the worktree."""
        source = make_source(tmp_path / "state", path=history.work / "sub")
        co = source.checkout("v1", "9")
        assert co.path == tmp_path / "state" / "worktrees" / f"9-{history.a[:12]}" / "sub"
        assert (co.path / "test_x.py").read_text() == "X = 1\n"

    def test_ref_before_the_project_existed(self, tmp_path: Path, history: History) -> None:
        """A ref whose tree lacks the project's subdirectory fails before any worktree is made."""
        c = commit(history.work, "add project", **{"proj/test_p.py": "P = 1\n"})
        source = make_source(tmp_path / "state", path=history.work / "proj")
        assert (source.checkout(c, "1").path / "test_p.py").is_file()
        with pytest.raises(SourceError, match="proj does not exist at"):
            source.checkout(history.a, "2")
        assert [p.name for p in (tmp_path / "state" / "worktrees").iterdir()] == [f"1-{c[:12]}"]

    def test_repository_without_commits(self, tmp_path: Path) -> None:
        """A freshly initialised repository is tested as a directory, with no SHA."""
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        git(fresh, "init", "-q")
        source = make_source(tmp_path / "state", path=fresh)
        assert source.resolve(None) is None
        co = source.checkout(None, 1)
        assert (co.path, co.sha, co.is_worktree) == (fresh, None, False)
        assert "without commits" in co.note

    def test_configured_branch_is_the_default(self, tmp_path: Path, history: History) -> None:
        """project.branch in path mode checks that branch out in a worktree when no ref is given."""
        git(history.work, "branch", "stable", history.a)
        co = make_source(tmp_path / "state", path=history.work, branch="stable").checkout(None, 3)
        assert (co.sha, co.branch, co.ref, co.is_worktree) == (history.a, "stable", None, True)

    def test_concurrent_checkouts_do_not_interfere(self, tmp_path: Path, history: History) -> None:
        """Two tiers checking out A and B at once get separate trees with their own files."""
        source = make_source(tmp_path / "state", path=history.work)
        barrier = threading.Barrier(2)
        got: dict[str, Checkout] = {}
        errors: list[BaseException] = []

        def run(name: str, sha: str) -> None:
            try:
                barrier.wait()
                got[name] = source.checkout(sha, name)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=a) for a in (("h", history.a), ("d", history.b))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        (got["h"].path / "value.txt").write_text("written by hourly")
        assert (got["h"].path / "value.txt").read_text() == "written by hourly"
        assert (got["d"].path / "value.txt").read_text() == "B"
        listed = worktree_paths(["-C", str(history.work)])
        assert str(got["h"].path) in listed and str(got["d"].path) in listed

    def test_provenance_is_json(self, tmp_path: Path, history: History) -> None:
        """provenance() round-trips through JSON with the commit's identity and origin."""
        co = make_source(tmp_path / "state", path=history.work).checkout("v1", "5")
        record = json.loads(json.dumps(co.provenance()))
        assert record["sha"] == history.a and record["ref"] == "v1"
        assert record["subject"] == "add feature" and record["author"] == AUTHOR
        assert record["origin"] == str(history.work) and record["worktree"] is True
        assert record["fresh_fetch"] is False and record["workdir"] == str(co.path)
        committed = datetime.fromisoformat(record["committed_at"])
        assert committed.tzinfo is not None
        assert abs(datetime.now(timezone.utc) - committed) < timedelta(minutes=5)


class TestPlainDirectory:
    """project.path that is not inside any git repository."""

    def test_plain_directory(self, tmp_path: Path) -> None:
        """No ref tests the directory itself with no SHA; any ref is an UnknownRefError."""
        plain = tmp_path / "plain"
        plain.mkdir()
        source = make_source(tmp_path / "state", path=plain)
        assert source.resolve(None) is None
        co = source.checkout(None, 1)
        assert (co.path, co.sha, co.is_worktree) == (plain, None, False)
        assert "not a git repository" in co.provenance()["note"]
        with pytest.raises(UnknownRefError, match="'main'"):
            source.checkout("main", 2)

    def test_missing_directory_is_a_source_error(self, tmp_path: Path) -> None:
        """A project path that does not exist is an infra problem, not a bad ref."""
        with pytest.raises(SourceError, match="not a directory"):
            make_source(tmp_path / "state", path=tmp_path / "gone").checkout(None, 1)
