"""``local.user``: a root daemon starts local-runner tests as an unprivileged account.

The test process gets the account's uid and primary gid and no supplementary groups (never the
daemon's). Its run dir is handed to it, and every directory above the run dir that the account
could not search gets the search bit for others (``o+x``: enter by name, never list), so the
default 0700 state dir stays unlistable. Files the daemon keeps there must not be world-readable
by mode (the systemd unit's ``UMask=0027`` sees to that).

Before the start, :meth:`RunAs.check_reach` makes sure the account can enter the workdir and
execute the command's program (by mode bits; ACLs are not consulted), so a project or
interpreter under ``/root`` fails with a message naming ``local.user`` / ``local.allow_root``
instead of a bare "permission denied" from the exec.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Sequence
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

    def check_reach(self, argv: Sequence[str], workdir: Path) -> None:
        """Raise :class:`InfraError` unless the account may enter ``workdir`` and run ``argv[0]``
        (for a symlink: both the path as given and its target)."""
        program = argv[0] if os.sep in argv[0] else shutil.which(argv[0]) or argv[0]
        read_exec = stat.S_IROTH | stat.S_IXOTH
        needs = [(workdir, read_exec, "enter"), (Path(program), read_exec, "run")]
        for path, bits, what in needs:
            for target in dict.fromkeys([path.absolute(), path.resolve()]):
                blocked = self._blocked(target, bits)
                if blocked is not None:
                    raise InfraError(
                        f"local.user {self.name!r} cannot {what} {path}: {blocked} is not "
                        f"reachable for it; make it so, name another account in local.user, "
                        "or set local.allow_root: true (unsafe: tests then run as root)"
                    )

    def _blocked(self, path: Path, bits: int) -> Path | None:
        """The first of ``path``'s parents (or ``path``) this account may not pass, else None."""
        for step, want in [*((p, stat.S_IXOTH) for p in reversed(path.parents)), (path, bits)]:
            try:
                st = step.stat()
            except OSError:
                return step
            if st.st_uid == self.uid:
                allowed = (st.st_mode >> 6) & 0o7
            elif st.st_gid == self.gid:
                allowed = (st.st_mode >> 3) & 0o7
            else:
                allowed = st.st_mode & 0o7
            if allowed & want != want:
                return step
        return None
