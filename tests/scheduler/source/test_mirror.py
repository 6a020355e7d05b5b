"""project.repo: a bare mirror in the state dir (source.mirror), fetched before each run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config import ProjectConfig
from scheduler.kernel.errors import SourceError, UnknownRefError
from scheduler.source import Source
from tests.scheduler.source.conftest import History, commit, git, make_source, worktree_paths


class TestRepoMode:
    """project.repo: a bare mirror in the state dir, fetched before each run."""

    @pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
    def test_mirror_follows_upstream(
        self, tmp_path: Path, history: History, upstream: Path, as_url: bool
    ) -> None:
        """The first call clones the mirror; a commit pushed later is tested by the next run."""
        repo = upstream.as_uri() if as_url else str(upstream)
        source = make_source(tmp_path / "state", repo=repo)
        assert source.resolve(None) == history.b
        assert (tmp_path / "state" / "source" / "mirror.git" / "HEAD").is_file()
        c = commit(history.work, "fix feature", **{"value.txt": "C"})
        git(history.work, "push", "-q", str(upstream), "main")
        co = source.checkout(None, "11")
        assert (co.sha, co.branch, co.fresh_fetch, co.note) == (c, "main", True, "")
        assert (co.path / "value.txt").read_text() == "C"
        assert source.changes_between(history.b, c) == [f"{c[:7]} fix feature"]

    def test_refs_resolve_in_the_mirror(
        self, tmp_path: Path, history: History, upstream: Path
    ) -> None:
        """Tags, origin/BRANCH and SHAs resolve; a branch deleted upstream is pruned away."""
        git(history.work, "push", "-q", str(upstream), f"{history.a}:refs/heads/old")
        source = make_source(tmp_path / "state", repo=str(upstream))
        assert source.resolve("v1") == history.a
        assert source.resolve("origin/main") == history.b
        assert source.resolve("old") == history.a
        git(history.work, "push", "-q", str(upstream), ":refs/heads/old")
        with pytest.raises(UnknownRefError, match="'old'"):
            source.resolve("old")

    def test_ref_a_while_upstream_main_is_b(
        self, tmp_path: Path, history: History, upstream: Path
    ) -> None:
        """--ref A in repo mode gives A's tree from the mirror."""
        co = make_source(tmp_path / "state", repo=str(upstream)).checkout(history.a[:10], "4")
        assert (co.path / "value.txt").read_text() == "A" and co.sha == history.a

    def test_offline_after_a_fetch_uses_the_mirror(
        self, tmp_path: Path, history: History, upstream: Path
    ) -> None:
        """With upstream gone the run still gets the last fetched commit, flagged as stale."""
        sleeps: list[float] = []
        source = make_source(tmp_path / "state", repo=str(upstream), sleeps=sleeps)
        source.resolve(None)
        upstream.rename(tmp_path / "moved.git")
        co = source.checkout(None, "12")
        assert (co.sha, co.fresh_fetch) == (history.b, False)
        assert co.note.startswith("offline: using the commits fetched at ")
        assert str(upstream) in co.note
        assert sleeps == [0.0, 0.0]  # tried three times before falling back

    def test_unknown_ref_while_offline_is_infra(
        self, tmp_path: Path, history: History, upstream: Path
    ) -> None:
        """A ref missing from a stale mirror may exist upstream: SourceError, not exit 2."""
        source = make_source(tmp_path / "state", repo=str(upstream))
        source.resolve(None)
        upstream.rename(tmp_path / "moved.git")
        with pytest.raises(SourceError, match=r"'new-branch'.*stale.*offline"):
            source.resolve("new-branch")

    def test_unreachable_with_nothing_fetched(self, tmp_path: Path) -> None:
        """A repo that was never fetched and cannot be is a SourceError naming the URL."""
        url = (tmp_path / "nowhere.git").as_uri()
        with pytest.raises(SourceError, match="nothing was fetched") as info:
            make_source(tmp_path / "state", repo=url).checkout(None, 1)
        assert url in str(info.value)
        assert not (tmp_path / "state" / "source" / "mirror.git").exists()

    def test_unreachable_clone_is_tried_once_per_reuse_window(self, tmp_path: Path) -> None:
        """Validation then checkout of one run pay for one failed clone, not two."""
        calls = tmp_path / "git-calls"
        wrapper = tmp_path / "git"
        wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec git "$@"\n')
        wrapper.chmod(0o755)
        url = (tmp_path / "nowhere.git").as_uri()
        source = Source(
            ProjectConfig(repo=url, fetch_timeout=20), tmp_path / "state", git=str(wrapper),
            retry_delays=(0.0,), fetch_reuse=timedelta(seconds=60), op_timeout=20,
        )  # fmt: skip
        with pytest.raises(SourceError):
            source.resolve("main")
        with pytest.raises(SourceError, match="nothing was fetched"):
            source.checkout(None, 1)
        clones = [line for line in calls.read_text().splitlines() if " clone " in f" {line} "]
        assert len(clones) == 2  # one attempt + one retry, for both calls together

    def test_credentials_never_appear_in_errors(self, tmp_path: Path) -> None:
        """A token in the repo URL is redacted from messages and provenance."""
        url = "https://bot:s3cret-token@127.0.0.1:9/project.git"
        with pytest.raises(SourceError) as info:
            make_source(tmp_path / "state", repo=url).resolve(None)
        assert "s3cret" not in str(info.value)
        assert "https://127.0.0.1:9/project.git" in str(info.value)  # the clean URL git keeps

    def test_changed_url_reclones(self, tmp_path: Path, history: History, upstream: Path) -> None:
        """Pointing the config at another repository replaces the mirror instead of mixing them."""
        make_source(tmp_path / "state", repo=str(upstream)).resolve(None)
        other = tmp_path / "other"
        other.mkdir()
        git(other, "init", "-q", "-b", "main")
        sha = commit(other, "other project", **{"o.txt": "o"})
        assert make_source(tmp_path / "state", repo=str(other)).resolve(None) == sha

    def test_release_prunes_the_mirror_record(
        self, tmp_path: Path, history: History, upstream: Path
    ) -> None:
        """A released worktree disappears from the mirror's ``git worktree list``."""
        source = make_source(tmp_path / "state", repo=str(upstream))
        co = source.checkout(None, "8")
        mirror = ["--git-dir", str(tmp_path / "state" / "source" / "mirror.git")]
        assert str(co.path) in worktree_paths(mirror)
        source.release(co, keep=False)
        assert str(co.path) not in worktree_paths(mirror) and not co.path.exists()
