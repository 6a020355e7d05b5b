"""Xid errors from the kernel log, where NVML's event set is not offered (some vGPU/MIG setups).

The NVIDIA driver writes ``NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus``
to the kernel log. :class:`KernelXidLog` reads ``/dev/kmsg`` from where it was opened (older lines
were judged by whoever read them then) and never blocks; an unreadable log yields nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

__all__ = ["KernelXidLog", "XidSource", "parse_xid_lines"]

_XID = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})[^)]*\): (\d+)")


class XidSource(Protocol):
    def new_xids(self) -> list[tuple[str, int]]:
        """``(pci bus id, xid)`` pairs written since the last call; bus ids like ``0000:3b:00``."""
        ...


def parse_xid_lines(lines: Iterable[str]) -> list[tuple[str, int]]:
    """The ``(bus id, xid)`` of every ``NVRM: Xid`` line, bus id lower-cased."""
    found = []
    for line in lines:
        match = _XID.search(line)
        if match:
            found.append((match.group(1).lower(), int(match.group(2))))
    return found


class KernelXidLog:
    """Non-blocking reader of ``/dev/kmsg`` (one record per read), positioned at its end."""

    def __init__(self, path: Path = Path("/dev/kmsg")) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self._close()

    def new_xids(self) -> list[tuple[str, int]]:
        if self._fd is None:
            return []
        lines = []
        while True:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # records were overwritten before we read them: go on with the rest
            except OSError:
                self._close()
                break
            if not record:
                break
            lines.append(record.decode(errors="replace"))
        return parse_xid_lines(lines)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
