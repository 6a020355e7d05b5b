"""The metrics HTTP service: /metrics, /healthz, /readyz on a real loopback socket."""

from __future__ import annotations

import http.client
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.config import Config
from scheduler.kernel.errors import DaemonError
from scheduler.metrics import (
    Metrics,
    MetricsServer,
    MetricsService,
    Renderer,
    parse_address,
    store_writable,
)
from scheduler.store.engine import Store, meta_table
from tests.scheduler.metrics.conftest import metrics_for


@dataclass
class FakeDaemon:
    """The parts of Daemon the service reads."""

    store: Store
    running: bool = True
    nexts: dict[str, datetime | None] = field(default_factory=dict)

    def next_fire_times(self) -> dict[str, datetime | None]:
        return self.nexts


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def service(make_config: Callable[..., Config], store: Store) -> Iterator[MetricsService]:
    config = make_config()
    metrics = Metrics(CollectorRegistry(), config, store, process_metrics=False)
    service = MetricsService(metrics, "127.0.0.1:0", ready_timeout_s=0.2)
    yield service
    service.stop()


def url(service: MetricsService, path: str) -> str:
    assert service.server is not None
    return f"http://127.0.0.1:{service.server.port}{path}"


class TestEndpoints:
    def test_metrics_serves_the_registry_with_the_live_next_fire(
        self, service: MetricsService, store: Store
    ) -> None:
        """/metrics renders the injected registry; next fire comes from the attached daemon."""
        at = datetime(2030, 1, 1, tzinfo=timezone.utc)
        service.start(FakeDaemon(store, nexts={"hourly": at}))
        status, content_type, body = get(url(service, "/metrics"))
        assert status == 200
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        key = ("schedctl_tier_next_fire_timestamp_seconds", (("tier", "hourly"),))
        assert samples[key] == at.timestamp()
        assert "schedctl_store_up 1.0" in body

    def test_text_format_even_when_openmetrics_is_offered(
        self, service: MetricsService, store: Store
    ) -> None:
        """Prometheus offers OpenMetrics and text; it gets the text format it always accepts."""
        service.start(FakeDaemon(store))
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        status, content_type, body = get(url(service, "/metrics"), accept)
        assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
        assert "# EOF" not in body

    def test_healthz_is_200_even_when_not_ready(
        self, service: MetricsService, store: Store
    ) -> None:
        """Liveness only says the process answers."""
        service.start(FakeDaemon(store, running=False))
        assert get(url(service, "/healthz"))[::2] == (200, "ok\n")

    def test_readyz_follows_the_scheduler_state(
        self, service: MetricsService, store: Store
    ) -> None:
        """/readyz is 200 while the scheduler runs, 503 naming the reason when it does not."""
        daemon = FakeDaemon(store)
        service.start(daemon)
        assert get(url(service, "/readyz"))[::2] == (200, "ready\n")
        with store.begin() as conn:
            heartbeat = conn.execute(
                meta_table.select().where(meta_table.c.key == "readyz_heartbeat")
            ).first()
        assert heartbeat is not None
        daemon.running = False
        assert get(url(service, "/readyz"))[::2] == (503, "not ready: scheduler is not running\n")

    def test_readyz_is_503_while_the_store_is_locked(
        self, service: MetricsService, store: Store
    ) -> None:
        """A store another writer holds is not writable: 503 within the short lock timeout."""
        service.start(FakeDaemon(store))
        holder = sqlite3.connect(store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            status, _, body = get(url(service, "/readyz"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert status == 503
        assert "is not writable: database is locked" in body

    def test_unknown_path_is_404(self, service: MetricsService, store: Store) -> None:
        """Anything else is a 404 listing the endpoints."""
        service.start(FakeDaemon(store))
        status, _, body = get(url(service, "/nope"))
        assert status == 404 and "/metrics" in body

    def test_concurrent_scrapes(self, service: MetricsService, store: Store) -> None:
        """Parallel scrapes all succeed (threaded server, collectors are thread-safe)."""
        service.start(FakeDaemon(store))
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(get(url(service, "/metrics"))[0]))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 8

    def test_keep_alive_client_scrapes_many_times_on_one_connection(
        self, service: MetricsService, store: Store
    ) -> None:
        """A kept-alive client (as Prometheus is) gets every reply, 404s included, on one socket."""
        service.start(FakeDaemon(store))
        assert service.server is not None
        conn = http.client.HTTPConnection("127.0.0.1", service.server.port, timeout=10)
        try:
            conn.connect()
            sock = conn.sock
            local = sock.getsockname()
            replies = []
            for path in ("/metrics", "/healthz", "/metrics", "/nope", "/readyz", "/metrics"):
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                assert response.getheader("Content-Length") == str(len(body))
                replies.append((path, response.status, body))
                assert conn.sock is sock and sock.getsockname() == local  # not reopened
        finally:
            conn.close()
        assert [status for _, status, _ in replies] == [200, 200, 200, 404, 200, 200]
        for path, _, body in replies:
            if path == "/metrics":
                names = {f.name for f in text_string_to_metric_families(body.decode())}
                assert "schedctl_store_up" in names


class TestLifecycle:
    def test_stop_closes_the_port(self, service: MetricsService, store: Store) -> None:
        """After stop() nothing listens on the port any more."""
        service.start(FakeDaemon(store))
        assert service.server is not None
        port = service.server.port
        service.stop()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    def test_port_in_use_is_a_daemon_error_naming_the_key(self) -> None:
        """A busy port fails start-up with the config key in the message."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            server = MetricsServer(CollectorRegistry(), address, lambda: None)
            with pytest.raises(DaemonError, match=r"daemon\.metrics_address: cannot listen"):
                server.start()

    def test_start_does_no_reverse_dns_lookup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``HTTPServer.server_bind`` would call ``socket.getfqdn`` (a DNS query at every start,
        seconds where the resolver times out); the server is named by the address it bound."""

        def no_dns(name: str = "") -> str:
            raise AssertionError(f"getfqdn({name!r}) called")

        monkeypatch.setattr(socket, "getfqdn", no_dns)
        server = MetricsServer(CollectorRegistry(), "127.0.0.1:0", lambda: None)
        server.start()
        try:
            assert server.port > 0
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10):
                pass
        finally:
            server.stop()

    @pytest.mark.parametrize(
        ("address", "expected"),
        [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)), (":9464", ("", 9464))],
    )
    def test_parse_address(self, address: str, expected: tuple[str, int]) -> None:
        """host:port, bracketed IPv6 and an empty host (every interface) are accepted."""
        assert parse_address(address) == expected

    @pytest.mark.parametrize("address", ["9464", "localhost", "host:port", "h:70000"])
    def test_bad_address_is_rejected(self, address: str) -> None:
        """Addresses without a valid port are a DaemonError at start."""
        server = MetricsServer(CollectorRegistry(), address, lambda: None)
        with pytest.raises(DaemonError, match="invalid address"):
            server.start()

    def test_store_writable_names_the_problem(self, store: Store, tmp_path: Path) -> None:
        """A healthy store is writable; a missing directory or a non-database file is not."""
        assert store_writable(store.path) is None
        missing = store_writable(tmp_path / "no" / "such" / "dir" / "x.db")
        assert missing is not None and "cannot be opened" in missing
        garbage = tmp_path / "garbage.db"
        garbage.write_bytes(b"not a database" * 100)
        broken = store_writable(garbage)
        assert broken is not None and "is not writable: file is not a database" in broken


class TestRenderer:
    def test_reused_text_matches_a_fresh_rendering(
        self, make_config: Callable[..., Config], store: Store
    ) -> None:
        """Memoised family text equals prometheus_client's own output, before and after changes."""
        metrics = metrics_for(make_config(), store)
        renderer = Renderer(metrics.registry)
        assert renderer.render() == generate_latest(metrics.registry)
        assert renderer.render() == generate_latest(metrics.registry)
        metrics.alert_sent("lab", "sent")
        run_id = store.create_run(tier="hourly", trigger="manual")
        assert run_id is not None
        store.finish_run(run_id, outcome="failed", duration_s=3.0, counts={"failed": 2})
        fresh = renderer.render()
        assert fresh == generate_latest(metrics.registry)
        assert b'schedctl_runs_total{outcome="failed",tier="hourly",trigger="manual"} 1.0' in fresh
        assert b'schedctl_alerts_sent_total{outcome="sent",sink="lab"} 1.0' in fresh

    def test_an_unchanged_store_is_neither_read_nor_rendered_again(
        self, make_config: Callable[..., Config], store: Store
    ) -> None:
        """A scrape of an unchanged store reuses every family's text; a run finished by another
        process (its own connection) shows in the next scrape, rendered as prometheus_client
        renders it, and only the families that changed are rendered again."""
        config = make_config(tiers={"hourly": {"timeout": 60}, "daily": {"timeout": 60}})
        metrics = metrics_for(config, store)
        renderer = Renderer(metrics.registry)
        first = renderer.render()
        families = renderer.rendered
        assert families > 10
        assert renderer.render() == first
        assert renderer.rendered == 0
        other = Store(store.path)
        try:
            run_id = other.create_run(tier="hourly", trigger="manual")
            assert run_id is not None
            other.finish_run(run_id, outcome="failed", duration_s=3.0, counts={"failed": 2})
        finally:
            other.close()
        fresh = renderer.render()
        assert fresh == generate_latest(metrics.registry)
        assert b'schedctl_runs_total{outcome="failed",tier="hourly",trigger="manual"} 1.0' in fresh
        assert b'schedctl_tier_last_outcome{outcome="failed",tier="hourly"} 1.0' in fresh
        assert 0 < renderer.rendered < families
        assert renderer.render() == fresh
        assert renderer.rendered == 0


def test_send_all_delivers_head_and_body_whole_through_partial_sends() -> None:
    """A body far larger than the socket buffer leaves in pieces, in order, nothing lost."""
    from scheduler.metrics.server import send_all

    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.settimeout(30)  # as a handler with a timeout: sends return after part of the data
    body = bytes(range(256)) * 8192  # 2 MiB
    received = bytearray()

    def read() -> None:
        while chunk := theirs.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_all(ours, [b"HEAD\r\n\r\n", b"", body])
    finally:
        ours.shutdown(socket.SHUT_WR)
        reader.join(timeout=30)
        ours.close()
        theirs.close()
    assert not reader.is_alive()
    assert bytes(received) == b"HEAD\r\n\r\n" + body
