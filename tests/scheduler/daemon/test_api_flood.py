"""A daemon process under a connection flood (issue 20, finding 6): 2,000 idle TCP connections
against a daemon whose descriptor limit is 1,024 -- the unix-socket client still triggers a run
within 2 s and ``/readyz`` answers. Loopback only, bounded in count and time."""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.api import ApiClient
from scheduler.daemon.lock import StateLock
from tests.conftest import ROOT, SCHEDCTL, require, tier
from tests.fresh import stop_process
from tests.scheduler.api.conftest import free_port
from tests.scheduler.daemon.test_daemon_process import env
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

IDLE_CONNECTIONS = 2000
DAEMON_NOFILE = 1024


@pytest.fixture
def idle_sockets() -> Iterator[list[socket.socket]]:
    """Room for 2,000 client sockets in this process, closed after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CONNECTIONS + 512
    require(hard == resource.RLIM_INFINITY or hard >= want, f"RLIMIT_NOFILE hard {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_flood_leaves_unix_socket_and_readyz_answering(
    write_config: Callable[..., Path], tmp_path: Path, idle_sockets: list[socket.socket]
) -> None:
    """2,000 connections that never send a header: a run is still submitted over the unix
    socket within 2 s, /readyz answers 200, and the daemon logs no EMFILE."""
    require(shutil.which("prlimit") is not None, "prlimit (util-linux) is not installed")
    api_port, metrics_port = free_port(), free_port()
    config = write_config(
        tiers={"manual": tier(schedule=None)},
        daemon={
            "metrics_address": f"127.0.0.1:{metrics_port}",
            "api": {"tcp": f"127.0.0.1:{api_port}"},
            "web_address": None,  # no page server on the shared default port
            "grace": 2,
        },
    )
    state = tmp_path / "state"
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["prlimit", f"--nofile={DAEMON_NOFILE}:{DAEMON_NOFILE}", *SCHEDCTL,
             "--config", str(config), "daemon", "--log-format", "json"],
            cwd=ROOT, env=env(), stdout=log, stderr=log,
        )  # fmt: skip
    try:
        sock_path = state / "api.sock"

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            if StateLock.holder(state) != proc.pid or not sock_path.exists():
                return False
            # The unix socket and the TCP listener start one after the other: wait for both.
            try:
                socket.create_connection(("127.0.0.1", api_port), timeout=2).close()
            except OSError:
                return False
            return True

        wait_for(ready, 30, "the daemon to listen")
        for _ in range(IDLE_CONNECTIONS):
            # Connected (accepted or queued by the kernel) and a request begun, never finished.
            sock = socket.create_connection(("127.0.0.1", api_port), timeout=3)
            idle_sockets.append(sock)
            with contextlib.suppress(OSError):  # answered 503 and closed already: fine
                sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: flood\r\n")

        # The client's own timeout is the 2-second bound: a slower answer raises.
        reply = ApiClient(unix=sock_path, timeout=2).submit("manual")
        assert reply["run_id"] >= 1
        url = f"http://127.0.0.1:{metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            assert response.status == 200
        client = ApiClient(unix=sock_path, timeout=10)
        wait_for(lambda: client.run(reply["run_id"])["outcome"] == "passed", 60, "the run to pass")
        assert "Too many open files" not in log_path.read_text()
    finally:
        stop_process(proc)
