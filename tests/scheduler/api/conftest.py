"""The control API in-process: a real daemon, real unix and TCP sockets, the fake runner."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runners.fake import FakeBehaviour
from scheduler.api import ApiClient, ApiService
from scheduler.config import Config
from scheduler.daemon.scheduler import Daemon
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher
from scheduler.store.engine import Store
from tests.conftest import tier
from tests.scheduler.conftest import FakeDispatcher
from tests.waiting import wait_for

TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Harness:
    def __init__(self, config: Config, dispatcher: Dispatcher, env: dict[str, str]) -> None:
        self.api = ApiService(config, env=env)
        self.daemon = Daemon(config, dispatcher.store, dispatcher, [self.api])
        self.store = dispatcher.store

    def unix(self) -> ApiClient:
        return ApiClient(unix=self.api.socket_path, timeout=10)

    def tcp(self, token: str | None = None) -> ApiClient:
        assert self.api.tcp_address is not None
        return ApiClient(tcp=self.api.tcp_address, token=token, timeout=10)


@pytest.fixture
def start(
    make_config: Callable[..., Config], fake_dispatcher: FakeDispatcher
) -> Iterator[Callable[..., Harness]]:
    """``start(token=TOKEN, duration_s=0, tcp=True, **config)``: a running daemon with the API."""
    started: list[Harness] = []

    def make(
        *, token: str | None = TOKEN, duration_s: float = 0.0, tcp: bool = True, **top: Any
    ) -> Harness:
        daemon_cfg: dict[str, Any] = {"metrics_address": None, "web_address": None, "grace": 1}
        if tcp:
            daemon_cfg["api"] = {"tcp": f"127.0.0.1:{free_port()}"}
        config = make_config(
            tiers={"hourly": tier(), "manual": tier(schedule=None)}, daemon=daemon_cfg, **top
        )
        env = {"SCHEDCTL_API_TOKEN": token} if token else {}
        behaviour = FakeBehaviour(duration_s=duration_s, tests=(("test_x.py::test_ok", "passed"),))
        harness = Harness(config, fake_dispatcher(config, behaviour), env)
        harness.daemon.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.daemon.stop(grace_s=1)


def raw(
    harness: Harness, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """A request without the client's conveniences, to see the status and JSON as sent."""
    assert harness.api.tcp_address is not None
    conn = http.client.HTTPConnection(*harness.api.tcp_address, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_final(store: Store, run_id: int, timeout: float = 30) -> Outcome:
    """The run's outcome once it is final."""

    def final() -> Outcome | None:
        outcome = store.get_run(run_id).outcome
        return outcome if outcome.is_final else None

    return wait_for(final, timeout, f"run {run_id} to finish")
