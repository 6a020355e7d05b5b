"""The bare mirror of ``project.repo`` under the state dir: clone once, fetch before each run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from scheduler.kernel.errors import SourceError
from scheduler.source.git import Git, RepoLock, boundary, redact_url, remove_tree

__all__ = ["Fetch", "Mirror"]

log = structlog.get_logger("schedctl.source")

# Branches and tags only: `clone --mirror` of a GitHub repository drags in every refs/pull/*.
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


@dataclass(frozen=True)
class Fetch:
    """The outcome of bringing the mirror up to date.

    :ivar fresh: the fetch (or first clone) succeeded just now.
    :ivar note: empty, or why the run uses older commits (``offline: ...``).
    """

    at: datetime
    fresh: bool
    note: str


class Mirror:
    """A bare repository at ``path`` that follows ``url``; all changes happen under ``lock``."""

    def __init__(
        self,
        git: Git,
        url: str,
        path: Path,
        lock: RepoLock,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        retry_delays: Sequence[float],
        reuse: timedelta,
        fetch_timeout: float,
        op_timeout: float,
    ) -> None:
        self.path = path
        self._git = git
        self._url = url
        self._origin = redact_url(url)
        self._stamp = path.with_name("last-fetch")
        self._lock = lock
        self._clock = clock
        self._sleep = sleep
        self._retry_delays = tuple(retry_delays)
        self._reuse = reuse
        self._fetch_timeout = fetch_timeout
        self._op_timeout = op_timeout
        self._last: Fetch | None = None
        self._clone_failed: tuple[datetime, SourceError] | None = None

    def refresh(self) -> Fetch:
        """Fetch, or clone the first time; a fetch within ``reuse`` of the last is not repeated.

        Raises:
            SourceError: nothing was ever fetched from the URL and it cannot be fetched now.
        """
        with self._lock.hold():
            now = self._clock()
            matches = self._matches()
            if matches and self._last is not None and now - self._last.at < self._reuse:
                return self._last
            if matches:
                self._last = self._fetch(now)
                return self._last
            # An unreachable URL costs its retries once per reuse window, not once per caller
            # (validation and checkout of one run both ask).
            if self._clone_failed is not None and now - self._clone_failed[0] < self._reuse:
                raise self._clone_failed[1]
            try:
                self._clone()
            except SourceError as exc:
                self._clone_failed = (now, exc)
                raise
            self._clone_failed = None
            self._last = Fetch(now, True, "")
            return self._last

    def _matches(self) -> bool:
        """True when a mirror of this very URL exists (a changed URL means another project)."""
        if not self.path.is_dir():
            return False
        url = self._git.run(
            ["--git-dir", str(self.path), "config", "--get", "remote.origin.url"],
            timeout=self._op_timeout,
            what="git config",
            check=False,
        )
        return url.ok and url.out.strip() == self._url

    def _fetch(self, now: datetime) -> Fetch:
        args = ["--git-dir", str(self.path), "fetch", "--prune", "--quiet", "origin"]
        try:
            self._retrying(
                lambda: self._git.run(
                    args, timeout=self._fetch_timeout, what=f"git fetch {self._origin}"
                )
            )
        except SourceError as exc:
            log.warning("fetch_failed_using_mirror", origin=self._origin, error=str(exc))
            return Fetch(now, False, f"offline: using the commits fetched {self._since()} ({exc})")
        self._touch_stamp()
        return Fetch(now, True, "")

    def _clone(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")

        def attempt() -> None:
            remove_tree(partial)
            self._git.run(
                ["clone", "--bare", "--quiet", "--", self._url, str(partial)],
                timeout=self._fetch_timeout,
                what=f"git clone {self._origin}",
            )

        try:
            self._retrying(attempt)
        except SourceError as exc:
            remove_tree(partial)
            raise SourceError(
                f"cannot fetch {self._origin} and nothing was fetched before: {exc}"
            ) from exc
        config = ["--git-dir", str(partial), "config"]
        self._git.run(
            [*config, "--replace-all", "remote.origin.fetch", _REFSPECS[0]],
            timeout=self._op_timeout,
            what="git config",
        )
        for refspec in _REFSPECS[1:]:
            self._git.run(
                [*config, "--add", "remote.origin.fetch", refspec],
                timeout=self._op_timeout,
                what="git config",
            )
        remove_tree(self.path)  # a mirror of another URL, if any
        with boundary(f"rename {partial}"):
            partial.rename(self.path)
        self._touch_stamp()

    def _retrying(self, action: Callable[[], object]) -> None:
        delays = list(self._retry_delays)
        while True:
            try:
                action()
                return
            except SourceError as exc:
                if not delays:
                    raise
                delay = delays.pop(0)
                log.warning("git_retry", origin=self._origin, error=str(exc), retry_in_s=delay)
                self._sleep(delay)

    def _touch_stamp(self) -> None:
        with boundary(f"write {self._stamp}"):
            self._stamp.touch()

    def _since(self) -> str:
        try:
            mtime = self._stamp.stat().st_mtime
        except OSError:
            return "at an unknown time"
        return "at " + datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
