"""The subprocess boundary in scheduler.source.git: timeouts, the repo lock, redaction."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler.config import ProjectConfig
from scheduler.kernel.errors import SourceError
from scheduler.source import Source
from scheduler.source.git import Git, RepoLock, redact_url
from tests.conftest import ROOT
from tests.scheduler.source.conftest import History
from tests.waiting import wait_for


def waiting_for_flock(path: Path) -> bool:
    """Whether this process is blocked on a flock of ``path``: a ``->`` line in /proc/locks."""
    inode = f":{path.stat().st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[5] == str(os.getpid()):
            if fields[6].endswith(inode):
                return True
    return False


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
                "import sys; from pathlib import Path;"
                "from scheduler.source.git import RepoLock\n"
                "with RepoLock(Path(sys.argv[1])).hold():\n"
                "    print('held', flush=True); sys.stdin.readline()",
                str(lock_file),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        entered = threading.Event()

        def take() -> None:
            with RepoLock(lock_file).hold():
                entered.set()

        waiter = threading.Thread(target=take, daemon=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            waiter.start()
            wait_for(lambda: waiting_for_flock(lock_file), 30, "hold() to block on the flock")
            assert not entered.is_set(), "hold() entered while another process held the lock"
        finally:
            assert holder.stdin is not None
            holder.stdin.close()  # the holder lets go
            holder.wait(timeout=30)
        assert entered.wait(30), "hold() never entered after the other process let go"
        waiter.join(30)

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
