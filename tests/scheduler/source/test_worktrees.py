"""The worktrees a run leaves: release (remove or keep) and pruning by age."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.scheduler.source.conftest import History, make_source, worktree_paths


class TestWorktrees:
    """What happens to a run's checkout after the run."""

    def test_release_removes_or_keeps(self, tmp_path: Path, history: History) -> None:
        """release() deletes the tree and git's record of it; keep=True leaves both."""
        source = make_source(tmp_path / "state", path=history.work)
        passed, failed = source.checkout(history.a, "1"), source.checkout(history.a, "2")
        (passed.path / "made-by-tests").mkdir()
        (passed.path / "made-by-tests").chmod(0o500)
        source.release(passed, keep=False)
        source.release(failed, keep=True)
        listed = worktree_paths(["-C", str(history.work)])
        assert not passed.path.exists() and str(passed.path) not in listed
        assert (failed.path / "value.txt").read_text() == "A" and str(failed.path) in listed

    def test_release_of_working_tree_is_a_no_op(self, tmp_path: Path, history: History) -> None:
        """Releasing a checkout of the path itself never deletes the user's directory."""
        source = make_source(tmp_path / "state", path=history.work)
        source.release(source.checkout(None, 1), keep=False)
        assert (history.work / "value.txt").read_text() == "B"

    def test_prune_worktrees_by_age(self, tmp_path: Path, history: History) -> None:
        """Worktrees older than the cut-off go (dirs and git records); younger ones stay."""
        later = datetime.now(timezone.utc)
        source = make_source(tmp_path / "state", path=history.work, clock=lambda: later)
        kept = [source.checkout(history.a, n) for n in ("1", "2")]
        assert source.prune_worktrees(timedelta(hours=1)) == 0
        later += timedelta(hours=2)
        assert source.prune_worktrees(timedelta(hours=1)) == 2
        assert not any(co.path.exists() for co in kept)
        assert worktree_paths(["-C", str(history.work)]) == [str(history.work)]
