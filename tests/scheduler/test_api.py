"""The control API in-process: a real daemon, real unix and TCP sockets, the fake runner."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runners.fake import FakeBehaviour, FakeRunner, always
from runners.registry import RunnerFactory
from scheduler.api import ApiClient, ApiService, load_token
from scheduler.api.server import Auth
from scheduler.config import ApiConfig, Config
from scheduler.daemon.scheduler import Daemon
from scheduler.kernel.errors import DaemonError, UnknownRunError, UsageError
from scheduler.kernel.outcome import Outcome
from scheduler.run.dispatch import Dispatcher
from scheduler.store.engine import Store
from tests.conftest import tier

TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Harness:
    def __init__(self, config: Config, behaviour: FakeBehaviour, env: dict[str, str]) -> None:
        store = Store(config.db_path)
        runner = FakeRunner(always(behaviour))
        factory = RunnerFactory({"local": runner, "auto": runner, "docker": runner})
        self.api = ApiService(config, env=env)
        self.daemon = Daemon(config, store, Dispatcher(config, store, factory), [self.api])
        self.store = store

    def unix(self) -> ApiClient:
        return ApiClient(unix=self.api.socket_path, timeout=10)

    def tcp(self, token: str | None = None) -> ApiClient:
        assert self.api.tcp_address is not None
        return ApiClient(tcp=self.api.tcp_address, token=token, timeout=10)


@pytest.fixture
def start(make_config: Callable[..., Config]) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(
        *, token: str | None = TOKEN, duration_s: float = 0.0, tcp: bool = True, **top: Any
    ) -> Harness:
        daemon_cfg: dict[str, Any] = {"metrics_address": None, "grace": 1}
        if tcp:
            daemon_cfg["api"] = {"tcp": f"127.0.0.1:{free_port()}"}
        config = make_config(
            tiers={"hourly": tier(), "manual": tier(schedule=None)}, daemon=daemon_cfg, **top
        )
        env = {"SCHEDCTL_API_TOKEN": token} if token else {}
        behaviour = FakeBehaviour(duration_s=duration_s, tests=(("test_x.py::test_ok", "passed"),))
        harness = Harness(config, behaviour, env)
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


def wait_final(store: Store, run_id: int, timeout: float = 10) -> Outcome:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = store.get_run(run_id).outcome
        if outcome.is_final:
            return outcome
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {store.get_run(run_id)}")


class TestUnixSocket:
    def test_socket_is_group_only_and_removed_on_stop(self, start: Callable[..., Harness]) -> None:
        """The unix socket is mode 0660 in the state dir and goes away when the daemon stops."""
        h = start()
        path = h.api.socket_path
        assert path.parent == h.daemon.config.state_dir
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        h.daemon.stop(grace_s=1)
        assert not path.exists()

    def test_post_over_unix_needs_no_token(self, start: Callable[..., Harness]) -> None:
        """A POST over the unix socket is accepted without a token; the run has trigger api."""
        h = start()
        reply = h.unix().submit("hourly")
        assert reply["pid"] > 0 and reply["trigger"] == "api"
        assert wait_final(h.store, reply["run_id"]) is Outcome.PASSED

    def test_manual_trigger_and_overrides_are_recorded(self, start: Callable[..., Harness]) -> None:
        """The CLI's trigger 'manual' and a marker override reach the run row."""
        h = start()
        run_id = h.unix().submit("manual", trigger="manual", markers="daily")["run_id"]
        wait_final(h.store, run_id)
        record = h.store.get_run(run_id)
        assert (record.trigger, record.markers) == ("manual", "daily")

    def test_events_stream_ends_with_the_summary(self, start: Callable[..., Harness]) -> None:
        """The event stream carries the run row, the results lines and a final summary."""
        h = start(duration_s=0.5)
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        events = list(client.events(run_id))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "run" and kinds[-1] == "finished"
        assert "collection" in kinds and "test" in kinds
        final = events[-1]["run"]
        assert final["run_id"] == run_id and final["outcome"] == "passed"
        assert final["counts"]["passed"] >= 1

    def test_long_socket_path_is_reachable(
        self, start: Callable[..., Harness], tmp_path: Path
    ) -> None:
        """A socket path longer than sun_path still binds and answers (via /proc/self/fd)."""
        deep = tmp_path / ("d" * 60) / ("e" * 60)
        deep.mkdir(parents=True)
        h = start(state_dir=str(deep / "state"), tcp=False)
        assert len(str(h.api.socket_path)) > 108
        assert h.unix().status()["daemon"]["running"] is True


class TestReadEndpoints:
    def test_status_tiers_runs(self, start: Callable[..., Harness]) -> None:
        """Status names the daemon pid and next fires; runs and tiers list what the store has."""
        h = start()
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        wait_final(h.store, run_id)
        status = client.status()
        assert status["daemon"]["pid"] > 0 and status["daemon"]["uptime_s"] >= 0
        rows = {row["tier"]: row for row in status["tiers"]}
        assert rows["hourly"]["next"].endswith("Z") and rows["manual"]["next"] is None
        assert rows["hourly"]["last_outcome"] == "passed"
        assert [r["id"] for r in client.runs(tier="hourly")] == [run_id]
        assert client.run(run_id)["outcome"] == "passed"
        assert {t["tier"] for t in client.tiers()} == {"hourly", "manual"}
        assert client.gpus() == {"pool": False, "leases": [], "waiting": []}

    def test_errors_are_json_with_status(self, start: Callable[..., Harness]) -> None:
        """Unknown runs are 404, unknown tiers 422 naming the tier, bad bodies 400."""
        h = start()
        client = h.unix()
        with pytest.raises(UnknownRunError):
            client.run(999)
        with pytest.raises(UsageError, match="unknown tier 'nope'"):
            client.submit("nope")
        with pytest.raises(UsageError, match="timeout_s"):
            client.submit("hourly", timeout_s=-1)
        status, body = raw(h, "GET", "/v1/nothing", None, {})
        assert status == 404 and "no such endpoint" in body["error"]
        status, body = raw(h, "GET", "/v1/runs?limit=abc", None, {})
        assert status == 400 and "limit" in body["error"]
        status, body = raw(h, "DELETE", "/v1/runs", None, {})
        assert status == 405


class TestTcpAuth:
    def test_post_without_token_is_401(self, start: Callable[..., Harness]) -> None:
        """An unauthenticated POST over TCP is refused with 401 JSON and records nothing."""
        h = start()
        status, body = raw(h, "POST", "/v1/runs", b'{"tier": "hourly"}', {})
        assert status == 401 and "bearer" in body["error"]
        assert h.store.list_runs() == []

    def test_wrong_token_is_401_right_token_is_202(self, start: Callable[..., Harness]) -> None:
        """A wrong bearer token gets 401; the right one gets 202 and a run."""
        h = start()
        with pytest.raises(DaemonError, match="401"):
            h.tcp("wrong").submit("hourly")
        reply = h.tcp(TOKEN).submit("hourly")
        assert wait_final(h.store, reply["run_id"]) is Outcome.PASSED

    def test_reads_need_no_token(self, start: Callable[..., Harness]) -> None:
        """GET over TCP works without a token; only state changes are guarded."""
        h = start()
        assert h.tcp().status()["daemon"]["running"] is True

    def test_no_token_configured_refuses_tcp_posts(self, start: Callable[..., Harness]) -> None:
        """Without a configured token every TCP POST is 401, even one carrying a token."""
        h = start(token=None)
        status, body = raw(h, "POST", "/v1/runs", b"{}", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 401 and "no API token configured" in body["error"]

    def test_malformed_authorization_never_crashes(self, start: Callable[..., Harness]) -> None:
        """Odd Authorization headers give 401 JSON, never a 500 or a traceback."""
        h = start()
        for header in ("Bearer", "Basic abc", "Bearer  ", "bearer \u00e9"):
            status, body = raw(h, "POST", "/v1/runs", b"{}", {"Authorization": header})
            assert status == 401 and "Traceback" not in json.dumps(body)


class TestCancel:
    def test_cancel_running_run(self, start: Callable[..., Harness]) -> None:
        """POST cancel stops a running run and records the given reason."""
        h = start(duration_s=30)
        client = h.unix()
        run_id = client.submit("hourly")["run_id"]
        deadline = time.monotonic() + 5
        while h.store.get_run(run_id).outcome is not Outcome.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        client.cancel(run_id, "enough")
        assert wait_final(h.store, run_id) is Outcome.CANCELLED
        assert h.store.get_run(run_id).reason == "enough"
        with pytest.raises(UsageError, match="not running"):
            client.cancel(run_id)


class TestToken:
    def test_token_file_in_credentials_directory(self, tmp_path: Path) -> None:
        """A relative token_file resolves under $CREDENTIALS_DIRECTORY (systemd LoadCredential)."""
        (tmp_path / "api-token").write_text(TOKEN + "\n")
        api = ApiConfig(token_file="api-token")
        assert load_token(api, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == TOKEN
        assert load_token(api, {"SCHEDCTL_API_TOKEN": "env"}) == "env"
        with pytest.raises(DaemonError, match="cannot read"):
            load_token(api, {"CREDENTIALS_DIRECTORY": str(tmp_path / "missing")})

    def test_auth_decisions(self) -> None:
        """Unix is always allowed; TCP needs exactly the configured token."""
        auth = Auth(TOKEN)
        assert auth.deny(None, over_tcp=False) is None
        assert auth.deny(f"Bearer {TOKEN}", over_tcp=True) is None
        assert auth.deny(f"Bearer {TOKEN}x", over_tcp=True) == (401, "invalid bearer token")
        assert Auth(None).deny(f"Bearer {TOKEN}", over_tcp=True)[0] == 401  # type: ignore[index]
