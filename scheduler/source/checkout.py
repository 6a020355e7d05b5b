"""A run's tree at a known commit, and the provenance stored with the run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["Checkout"]


@dataclass(frozen=True)
class Checkout:
    """The directory a run uses as its workdir, and which commit it holds.

    :ivar path: the workdir: a worktree (or a subdirectory of one), or the configured path itself.
    :ivar sha: full 40-hex SHA; ``None`` when the project path is not a git repository.
    :ivar ref: what was asked for; ``None`` means the default branch / the working tree.
    :ivar fresh_fetch: the tree came from a fetch that succeeded just now.
    :ivar note: anything a reader of the run record should know (offline, uncommitted changes).
    :ivar is_worktree: ``path`` lies in a per-run worktree that :meth:`Source.release` removes.
    :ivar origin: the repository URL (credentials redacted) or the project path.
    :ivar branch: the default branch used when ``ref`` is ``None`` (repo mode or a configured one).
    """

    path: Path
    sha: str | None
    ref: str | None
    subject: str | None
    author: str | None
    committed_at: datetime | None
    fresh_fetch: bool
    note: str
    is_worktree: bool
    origin: str = ""
    branch: str | None = None

    def provenance(self) -> dict[str, Any]:
        """JSON-able record of where the tested tree came from (stored in ``runs.source``)."""
        return {
            "origin": self.origin,
            "ref": self.ref,
            "branch": self.branch,
            "sha": self.sha,
            "subject": self.subject,
            "author": self.author,
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "fresh_fetch": self.fresh_fetch,
            "note": self.note,
            "worktree": self.is_worktree,
            "workdir": str(self.path),
        }
