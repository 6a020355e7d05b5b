"""Where the control API listens: the unix socket's path, and an address for it that fits.

Kept apart from the server so that a client (``schedctl run``, ``status``) finds the daemon
without importing the server, its routes and their pydantic models.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config import Config

UNIX_PATH_MAX = 107


def socket_path(config: Config) -> Path:
    return config.daemon.api.socket or config.state_dir / "api.sock"


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path`` (108 bytes) however deep the path is.

    A long path goes through ``/proc/self/fd/N/`` of its directory, which the kernel resolves
    like the real one for both ``bind`` and ``connect``.
    """
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
