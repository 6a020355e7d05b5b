"""The process tree of one torchrun launch, read from ``/proc``.

torchrun starts each worker with ``start_new_session=True``, so the workers are *not* in the
launcher's process group: ``killpg`` on torchrun alone leaves them running, and once torchrun dies
they are re-parented away from it. :class:`ProcessTree` therefore remembers every session it has
seen below the launcher and finds members by session id, which survives re-parenting.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str


def read_proc_table(proc: Path = Path("/proc")) -> dict[int, ProcInfo]:
    """Every live process, from ``/proc/<pid>/stat``; processes that vanish mid-scan are skipped."""
    table: dict[int, ProcInfo] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) < 4:
            continue
        pid = int(entry.name)
        table[pid] = ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0])
    return table


class ProcessTree:
    """The launcher ``root`` and everything below it, tracked by session id."""

    def __init__(self, root: int, proc: Path = Path("/proc")) -> None:
        self.root = root
        self._proc = proc
        self.sessions: set[int] = {root}

    def refresh(self) -> dict[int, ProcInfo]:
        """Scan once, remember the sessions of the root's descendants, return the live members."""
        table = read_proc_table(self._proc)
        for pid in _descendants(self.root, table):
            self.sessions.add(table[pid].sid)
        return self._members(table)

    def members(self) -> dict[int, ProcInfo]:
        """Live (non-zombie) processes in any session seen so far."""
        return self._members(read_proc_table(self._proc))

    def workers(self) -> list[int]:
        """The top-level processes under the launcher (the ranks), the launcher excluded."""
        members = self.refresh()
        return sorted(
            pid
            for pid, info in members.items()
            if pid != self.root and (info.ppid == self.root or info.ppid not in members)
        )

    def signal_all(self, sig: signal.Signals) -> int:
        """Send ``sig`` to every live member; return how many were signalled."""
        return signal_pids(self.members(), sig)

    def _members(self, table: dict[int, ProcInfo]) -> dict[int, ProcInfo]:
        return {
            pid: info
            for pid, info in table.items()
            if info.sid in self.sessions and info.state not in ("Z", "X") and pid != os.getpid()
        }


def signal_pids(pids: dict[int, ProcInfo] | list[int], sig: signal.Signals) -> int:
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def _descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
