"""Source: resolve refs to commits and hand each run its own detached worktree."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from scheduler.config import ProjectConfig
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import SourceError, UnknownRefError
from scheduler.source.checkout import Checkout
from scheduler.source.git import (
    Git,
    GitResult,
    RepoLock,
    boundary,
    redact_url,
    remove_tree,
    split_credentials,
)
from scheduler.source.mirror import Fetch, Mirror

__all__ = ["Source"]

log = structlog.get_logger("schedctl.source")

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
_DIRTY_NOTE = "working tree, may have uncommitted changes"
_SHOW = ("show", "-s", "--no-show-signature", "--format=%H%x00%s%x00%an <%ae>%x00%cI")
"""``git show`` of one commit's details, read by :func:`_commit_fields`."""


@dataclass(frozen=True)
class _Repo:
    """A repository refs resolve in: the bare mirror, or the work tree holding project.path."""

    args: tuple[str, ...]  # git's global options selecting it
    subdir: Path  # project.path relative to the top of the work tree ("." for the mirror)


class Source:
    """The project under test, from a mirrored ``repo`` URL or a local ``path``.

    ``repo`` mode keeps a bare mirror (branches and tags only, so a GitHub mirror does not drag
    in every ``refs/pull/*``) at ``<state_dir>/source/mirror.git`` and fetches before each run;
    a fetch within ``fetch_reuse`` of the previous one is not repeated, so ``resolve()`` then
    ``checkout()`` costs one fetch. ``path`` mode resolves refs in the repository holding the path
    and, without a ref, tests the directory as it is. Worktrees go to
    ``<state_dir>/worktrees/<run_id>-<sha12>``; git metadata changes are serialised across threads
    and processes.
    """

    def __init__(
        self,
        project: ProjectConfig,
        state_dir: Path,
        *,
        git: str = "git",
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        retry_delays: Sequence[float] = (2.0, 10.0),
        fetch_reuse: timedelta = timedelta(seconds=60),
        op_timeout: float = 300.0,
    ) -> None:
        self._project = project
        self._origin = redact_url(project.repo) if project.repo else str(project.path)
        # The URL's password goes to git through its environment only, never into the mirror.
        repo_url, credentials = split_credentials(project.repo) if project.repo else ("", None)
        self._git = Git(git, secret_url=project.repo, credentials=credentials)
        self._clock = clock
        self._op_timeout = op_timeout
        self._worktrees = state_dir / "worktrees"
        self._lock = RepoLock(state_dir / "source" / ".lock")
        self._mirror = Mirror(
            self._git,
            repo_url,
            state_dir / "source" / "mirror.git",
            self._lock,
            clock=clock,
            sleep=sleep,
            retry_delays=retry_delays,
            reuse=fetch_reuse,
            fetch_timeout=float(project.fetch_timeout),
            op_timeout=op_timeout,
        )

    # -- public API ----------------------------------------------------------------------------

    def resolve(self, ref: str | None) -> str | None:
        """Full SHA that ``ref`` (``None``: the default branch / HEAD) names, fetching first.

        Raises:
            UnknownRefError: ``ref`` names no commit (or starts with ``-``).
            SourceError: git failed, or the repo was never fetched and cannot be now.
        """
        self._check_ref(ref)
        if self._project.repo is not None:
            return self._resolve_mirror(ref, self._mirror.refresh())[0]
        repo = self._local_repo()
        wanted = ref if ref is not None else self._project.branch
        if repo is None:
            self._require_no_ref(ref)
            return None
        if wanted is None:
            return self._lookup(repo, "HEAD^{commit}")
        return self._sha(repo, wanted, asked=ref is not None)

    def checkout(self, ref: str | None, run_id: str | int) -> Checkout:
        """A tree at ``ref`` for run ``run_id``: a detached worktree, or the path as it is."""
        self._check_ref(ref)
        if self._project.repo is not None:
            fetch = self._mirror.refresh()
            sha, branch = self._resolve_mirror(ref, fetch)
            return self._worktree_checkout(self._mirror_repo, sha, ref, branch, run_id, fetch)
        wanted = ref if ref is not None else self._project.branch
        if wanted is None:
            return self._working_tree_checkout()
        local = self._local_repo()
        if local is None:
            self._require_no_ref(ref)
            return self._plain_checkout()
        sha = self._sha(local, wanted, asked=ref is not None)
        branch = None if ref is not None else wanted
        return self._worktree_checkout(
            local, sha, ref, branch, run_id, Fetch(self._clock(), False, "")
        )

    def release(self, checkout: Checkout, *, keep: bool) -> None:
        """Remove the run's worktree and git's record of it; ``keep`` leaves it for retention."""
        if keep or not checkout.is_worktree:
            return
        root = self._worktree_root(checkout.path)
        with self._lock.hold():
            remove_tree(root)
            self._prune_metadata()

    def changes_between(self, old_sha: str, new_sha: str, limit: int = 50) -> list[str]:
        """``git log --oneline old..new``, newest first, at most ``limit`` lines; [] on errors."""
        if old_sha.startswith("-") or new_sha.startswith("-") or limit <= 0:
            return []
        try:
            repo = self._history_repo()
            if repo is None:
                return []
            span = f"{old_sha}..{new_sha}"
            out = self._run(
                [*repo.args, "log", "--no-color", "--format=%h %s", f"-n{limit}", span, "--"],
                f"git log {span}",
            ).out
        except SourceError as exc:
            log.warning("changes_between_failed", old=old_sha, new=new_sha, error=str(exc))
            return []
        return out.splitlines()

    def prune_worktrees(self, older_than: timedelta) -> int:
        """Remove worktrees created more than ``older_than`` ago; returns how many went."""
        cutoff = self._clock() - older_than
        removed = 0
        with self._lock.hold():
            with boundary(f"list {self._worktrees}"):
                entries = sorted(self._worktrees.iterdir()) if self._worktrees.is_dir() else []
            for entry in entries:
                if self._created_at(entry) < cutoff:
                    remove_tree(entry)
                    removed += 1
            if removed:
                self._prune_metadata()
        return removed

    # -- refs ----------------------------------------------------------------------------------

    def _check_ref(self, ref: str | None) -> None:
        if ref is not None and (not ref or ref.startswith("-") or any(c in ref for c in "\0\n\r")):
            raise UnknownRefError(ref, f"{self._origin} (refs may not be empty or start with '-')")

    def _require_no_ref(self, ref: str | None) -> None:
        if ref is not None:
            raise UnknownRefError(ref, f"{self._origin} (not a git repository)")
        if self._project.branch is not None:
            raise SourceError(f"project.branch is set but {self._origin} is not a git repository")

    def _resolve_mirror(self, ref: str | None, fetch: Fetch) -> tuple[str, str | None]:
        """(sha, default branch used) in the mirror."""
        repo = self._mirror_repo
        if ref is not None:
            try:
                return self._sha(repo, ref, asked=True), None
            except UnknownRefError as exc:
                if fetch.fresh:
                    raise
                # It may exist upstream: not knowing is an infra problem, not a typo.
                raise SourceError(f"{exc}, and the mirror is stale: {fetch.note}") from exc
        branch = self._project.branch
        if branch is None:
            head = self._run([*repo.args, "symbolic-ref", "--quiet", "HEAD"], "git symbolic-ref")
            branch = head.out.strip().removeprefix("refs/heads/")
        return self._sha(repo, branch, asked=False), branch

    def _sha(self, repo: _Repo, name: str, *, asked: bool) -> str:
        """Resolve ``name``; unknown: UnknownRefError if a person asked for it, else SourceError."""
        mirror = repo.args[0] == "--git-dir"
        candidates = [name]
        if mirror and name.startswith("origin/"):
            candidates.append("refs/heads/" + name.removeprefix("origin/"))
        elif not mirror and name != "HEAD":
            candidates.append("refs/remotes/origin/" + name)
        for candidate in candidates:
            sha = self._lookup(repo, f"{candidate}^{{commit}}")
            if sha is not None:
                return sha
        if asked:
            raise UnknownRefError(name, self._origin)
        raise SourceError(f"{name!r} names no commit in {self._origin}")

    def _lookup(self, repo: _Repo, rev: str) -> str | None:
        """``git rev-parse --verify``: the object id, or None when ``rev`` names nothing."""
        result = self._git.run(
            [*repo.args, "rev-parse", "--verify", "--quiet", rev],
            timeout=self._op_timeout,
            what=f"git rev-parse {rev}",
            check=False,
        )
        if result.ok:
            return result.out.strip()
        if result.code != 1:
            raise SourceError(f"git rev-parse {rev} in {self._origin}: {result.reason()}")
        return None

    # -- repositories --------------------------------------------------------------------------

    def _local_repo(self) -> _Repo | None:
        """The work tree holding project.path, or None when it is a plain directory."""
        path = self._project.path
        assert path is not None  # ProjectConfig guarantees path when repo is None
        if not path.is_dir():
            raise SourceError(f"project path {path} is not a directory")
        result = self._git.run(
            ["-C", str(path), "rev-parse", "--show-toplevel"],
            timeout=self._op_timeout,
            what=f"git rev-parse in {path}",
            check=False,
        )
        if not result.ok:
            if "not a git repository" in result.err:
                return None
            raise SourceError(f"git rev-parse in {path}: {result.reason()}")
        top = Path(result.out.strip())
        with boundary(f"resolve {path}"):
            subdir = path.resolve().relative_to(top.resolve())
        return _Repo(("-C", str(top)), subdir)

    @property
    def _mirror_repo(self) -> _Repo:
        return _Repo(("--git-dir", str(self._mirror.path)), Path("."))

    def _history_repo(self) -> _Repo | None:
        if self._project.repo is not None:
            return self._mirror_repo if self._mirror.path.is_dir() else None
        return self._local_repo()

    def _prune_metadata(self) -> None:
        repo = self._history_repo()
        if repo is not None:
            self._run([*repo.args, "worktree", "prune"], "git worktree prune")

    # -- trees ---------------------------------------------------------------------------------

    def _plain_checkout(
        self, note: str = "not a git repository: testing the directory as it is"
    ) -> Checkout:
        path = self._project.path
        assert path is not None
        return Checkout(path, None, None, None, None, None, False, note, False, self._origin)

    def _working_tree_checkout(self) -> Checkout:
        """The project directory as it is: its HEAD commit and whether anything differs from it.

        Two git calls at once, on the directory itself (git finds the work tree holding it):
        ``status --porcelain=v2 --branch`` (a repository at all? HEAD's commit, or none yet?
        changes?) and ``show`` of HEAD's commit details. Should HEAD move between the two, the
        commit status names is shown again.
        """
        path = self._project.path
        assert path is not None
        if not path.is_dir():
            raise SourceError(f"project path {path} is not a directory")
        here = ["-C", str(path)]
        status, shown = self._git.run_together(
            [
                [*here, "status", "--porcelain=v2", "--branch", "--", "."],
                [*here, *_SHOW, "HEAD", "--"],
            ],
            timeout=self._op_timeout,
            what=f"git status in {path}",
        )
        if not status.ok:
            if "not a git repository" in status.err:
                return self._plain_checkout()
            raise SourceError(f"git status in {path}: {status.reason()}")
        lines = status.out.splitlines()
        head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "")
        if not head or head == "(initial)":
            return self._plain_checkout("git repository without commits: testing the directory")
        if not shown.ok or not shown.out.startswith(head):
            shown = self._run([*here, *_SHOW, head, "--"], "git show")
        subject, author, when = _commit_fields(head, shown.out)
        note = _DIRTY_NOTE if any(not ln.startswith("#") for ln in lines if ln) else ""
        return Checkout(path, head, None, subject, author, when, False, note, False, self._origin)

    def _worktree_checkout(
        self,
        repo: _Repo,
        sha: str,
        ref: str | None,
        branch: str | None,
        run_id: str | int,
        fetch: Fetch,
    ) -> Checkout:
        if repo.subdir != Path(".") and self._lookup(repo, f"{sha}:{repo.subdir}") is None:
            raise SourceError(f"{repo.subdir} does not exist at {sha[:12]} in {self._origin}")
        subject, author, when = self._commit(repo, sha)
        root = self._add_worktree(repo, sha, run_id)
        return Checkout(
            path=root / repo.subdir,
            sha=sha,
            ref=ref,
            subject=subject,
            author=author,
            committed_at=when,
            fresh_fetch=fetch.fresh,
            note=fetch.note,
            is_worktree=True,
            origin=self._origin,
            branch=branch,
        )

    def _add_worktree(self, repo: _Repo, sha: str, run_id: str | int) -> Path:
        root = self._worktrees / f"{_UNSAFE_ID.sub('_', str(run_id))}-{sha[:12]}"
        # Hooks off: a post-checkout hook of the project must not run on the scheduler's host.
        add = ["-c", "core.hooksPath=/dev/null", *repo.args, "worktree", "add", "--detach"]
        with self._lock.hold():
            if root.exists() or root.is_symlink():  # a leftover of a crashed daemon
                remove_tree(root)
                self._run([*repo.args, "worktree", "prune"], "git worktree prune")
            with boundary(f"create {self._worktrees}"):
                self._worktrees.mkdir(parents=True, exist_ok=True)
            try:
                self._run([*add, "--quiet", str(root), sha], f"git worktree add {root.name}")
            except SourceError:
                remove_tree(root)
                raise
        return root

    def _worktree_root(self, path: Path) -> Path:
        try:
            first = path.relative_to(self._worktrees).parts[0]
        except (ValueError, IndexError) as exc:
            raise SourceError(f"{path} is not a worktree under {self._worktrees}") from exc
        return self._worktrees / first

    def _created_at(self, entry: Path) -> datetime:
        """When a worktree was added: its ``.git`` file is written once, by ``worktree add``."""
        with boundary(f"stat {entry}"):
            marker = entry / ".git"
            stat = marker.lstat() if marker.exists() else entry.lstat()
        return datetime.fromtimestamp(stat.st_mtime, timezone.utc)

    def _commit(self, repo: _Repo, sha: str) -> tuple[str, str, datetime]:
        """(subject, 'name <email>', commit time) of ``sha``."""
        return _commit_fields(sha, self._run([*repo.args, *_SHOW, sha], "git show").out)

    def _run(self, args: list[str], what: str, timeout: float | None = None) -> GitResult:
        return self._git.run(args, timeout=timeout or self._op_timeout, what=what)


def _commit_fields(sha: str, out: str) -> tuple[str, str, datetime]:
    """(subject, 'name <email>', commit time) from :data:`_SHOW`'s output for ``sha``."""
    fields = out.rstrip("\n").split("\0")
    if len(fields) != 4:
        raise SourceError(f"git show {sha}: unexpected output {out[:200]!r}")
    try:
        when = datetime.fromisoformat(fields[3])
    except ValueError as exc:
        raise SourceError(f"git show {sha}: bad commit time {fields[3]!r}") from exc
    return fields[1], fields[2], when
