"""The API's unix socket: where it lives, who may open it, and paths longer than sun_path."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from tests.scheduler.api.conftest import Harness


class TestUnixSocket:
    def test_socket_is_group_only_and_removed_on_stop(self, start: Callable[..., Harness]) -> None:
        """The unix socket is mode 0660 in the state dir and goes away when the daemon stops."""
        h = start()
        path = h.api.socket_path
        assert path.parent == h.daemon.config.state_dir
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        h.daemon.stop(grace_s=1)
        assert not path.exists()

    def test_long_socket_path_is_reachable(
        self, start: Callable[..., Harness], tmp_path: Path
    ) -> None:
        """A socket path longer than sun_path still binds and answers (via /proc/self/fd)."""
        deep = tmp_path / ("d" * 60) / ("e" * 60)
        deep.mkdir(parents=True)
        h = start(state_dir=str(deep / "state"), tcp=False)
        assert len(str(h.api.socket_path)) > 108
        assert h.unix().status()["daemon"]["running"] is True
