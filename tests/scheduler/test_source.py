"""Source against real git repositories made in tmp dirs: refs, worktrees, mirror, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.config import ProjectConfig
from scheduler.kernel.errors import SourceError, UnknownRefError
from scheduler.source import Checkout, Source
from scheduler.source.git import Git, RepoLock, redact_url

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


class TestPathMode:
    """project.path pointing at a git work tree."""

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
        assert "https://***@127.0.0.1:9/project.git" in str(info.value)

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


class TestGitBoundary:
    """The subprocess boundary in scheduler.source.git."""

    def test_timeout_kills_the_whole_process_group(self, tmp_path: Path) -> None:
        """A hung git whose helper holds the pipes open is killed at the timeout, not later."""
        fake = tmp_path / "git"
        fake.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")
        fake.chmod(0o755)
        start = time.monotonic()
        with pytest.raises(SourceError, match=r"timed out after 0\.5 s"):
            Git(str(fake)).run(["fetch"], timeout=0.5, what="git fetch")
        assert time.monotonic() - start < 5

    def test_lock_excludes_another_process(self, tmp_path: Path) -> None:
        """RepoLock waits while a second process holds the flock on the same file."""
        lock_file = tmp_path / "source" / ".lock"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from pathlib import Path;"
                "from scheduler.source.git import RepoLock\n"
                "with RepoLock(Path(sys.argv[1])).hold():\n"
                "    print('held', flush=True); time.sleep(0.6)",
                str(lock_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            start = time.monotonic()
            with RepoLock(lock_file).hold():
                waited = time.monotonic() - start
        finally:
            holder.wait(timeout=10)
        assert waited > 0.3

    def test_missing_git_is_a_source_error(self, tmp_path: Path, history: History) -> None:
        """No git executable: a SourceError, not an OSError leaking out."""
        project = ProjectConfig(path=history.work)
        with pytest.raises(SourceError, match="No such file"):
            Source(project, tmp_path / "state", git=str(tmp_path / "no-git")).resolve(None)

    def test_redact_url(self) -> None:
        """Only the userinfo of scheme URLs is hidden; scp-style addresses and paths stay."""
        assert redact_url("https://u:p@h/x") == "https://***@h/x"
        assert redact_url("git@github.com:o/r.git") == "git@github.com:o/r.git"
        assert redact_url("/srv/git/r.git") == "/srv/git/r.git"
