"""Resolving refs in a work tree (scheduler.source.core), and the log between two commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.kernel.errors import UnknownRefError
from tests.scheduler.source.conftest import History, commit, make_source


class TestResolve:
    """project.path pointing at a git work tree: which commit a ref names."""

    def test_resolve_none_is_the_branch_tip(self, tmp_path: Path, history: History) -> None:
        """Without a ref the source resolves HEAD of the work tree: commit B."""
        assert make_source(tmp_path / "state", path=history.work).resolve(None) == history.b

    @pytest.mark.parametrize("kind", ["full", "short", "tag", "branch~1"])
    def test_resolve_accepts_every_ref_form(
        self, tmp_path: Path, history: History, kind: str
    ) -> None:
        """A full SHA, a short SHA, a tag and a rev expression all resolve to A's full SHA."""
        ref = {"full": history.a, "short": history.a[:8], "tag": "v1", "branch~1": "main~1"}[kind]
        assert make_source(tmp_path / "state", path=history.work).resolve(ref) == history.a

    def test_unknown_ref_names_the_ref(self, tmp_path: Path, history: History) -> None:
        """A ref naming no commit raises UnknownRefError (exit 2) naming the ref and the repo."""
        source = make_source(tmp_path / "state", path=history.work)
        with pytest.raises(UnknownRefError, match="no-such-branch") as info:
            source.checkout("no-such-branch", 1)
        assert info.value.ref == "no-such-branch" and info.value.exit_code == 2
        assert str(history.work) in str(info.value)
        assert not (tmp_path / "state" / "worktrees").exists()

    @pytest.mark.parametrize("ref", ["-rf", "--output=/tmp/pwned", "", "main\n--all"])
    def test_option_like_refs_are_rejected(
        self, tmp_path: Path, history: History, ref: str
    ) -> None:
        """Refs that git could read as options (or that hide a second line) never reach git."""
        source = make_source(tmp_path / "state", path=history.work)
        with pytest.raises(UnknownRefError) as info:
            source.resolve(ref)
        assert info.value.ref == ref
        with pytest.raises(UnknownRefError):
            source.checkout(ref, 1)


class TestChangesBetween:
    """The one-line log between two commits, as alerts and ``show`` print it."""

    def test_changes_between_lists_b(self, tmp_path: Path, history: History) -> None:
        """changes_between(A, B) is B's one-line log entry; nothing from A itself."""
        changes = make_source(tmp_path / "state", path=history.work).changes_between(
            history.a, history.b
        )
        assert len(changes) == 1
        assert changes[0].endswith(" break feature") and history.b.startswith(changes[0][:7])

    def test_changes_between_is_capped_newest_first(self, tmp_path: Path, history: History) -> None:
        """With more commits than ``limit`` only the newest ``limit`` come back."""
        for n in range(3):
            commit(history.work, f"change {n}", **{"value.txt": str(n)})
        source = make_source(tmp_path / "state", path=history.work)
        subjects = [line.split(" ", 1)[1] for line in source.changes_between(history.a, "HEAD", 2)]
        assert subjects == ["change 2", "change 1"]

    def test_changes_between_bad_input_is_empty(self, tmp_path: Path, history: History) -> None:
        """An unknown SHA or an option-like argument yields [] instead of raising."""
        source = make_source(tmp_path / "state", path=history.work)
        assert source.changes_between("0" * 40, history.b) == []
        assert source.changes_between("--all", history.b) == []
