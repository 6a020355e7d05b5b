"""``local.user``: a root daemon starts local-runner tests as an unprivileged account.

The test process gets the account's uid and primary gid and no supplementary groups (never the
daemon's). Its run dir is handed to it, and every directory above the run dir that the account
could not search gets the search bit for others (``o+x``: enter by name, never list), so the
default 0700 state dir stays unlistable. Files the daemon keeps there must not be world-readable
by mode (the systemd unit's ``UMask=0027`` sees to that).
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.kernel.errors import InfraError


@dataclass(frozen=True)
class RunAs:
    """The account test processes run as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise InfraError(f"local.user {name!r} is no account on this host") from None
        if entry.pw_uid == 0:
            raise InfraError(f"local.user {name!r} is root: name an unprivileged account")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def hand_over(self, run_dir: Path) -> None:
        """Make ``run_dir`` (and what the daemon put in it) the account's, reachable by it."""
        try:
            for parent in reversed(run_dir.absolute().parents):
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
            for dirpath, dirs, files in os.walk(run_dir):
                for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
                    os.chown(name, self.uid, self.gid, follow_symlinks=False)
        except OSError as exc:
            raise InfraError(f"cannot hand {run_dir} to local.user {self.name}: {exc}") from exc
