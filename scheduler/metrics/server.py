"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

A stdlib ``ThreadingHTTPServer`` on its own thread; a slow scrape never blocks a health probe.
``/readyz`` answers 200 only while the scheduler runs and the store accepts a write; otherwise
503 with the reason as the body.

``/metrics`` is the Prometheus text format (0.0.4), which every Prometheus accepts. Rendering it
costs about 8 µs per sample in prometheus_client, so :class:`Renderer` keeps the text of each
family and reuses it while a collector hands back the same object (unchanged tallies, and the
store's gauges while the store is unchanged, do) or an equal one (gauges rebuilt per scrape).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from scheduler.kernel.errors import DaemonError
from scheduler.kernel.httpbind import bind_without_fqdn
from scheduler.metrics.recorder import Metrics
from scheduler.store.engine import Store, probe_writable

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape
    from prometheus_client.core import Metric

__all__ = [
    "Collects",
    "DaemonView",
    "MetricsServer",
    "MetricsService",
    "Renderer",
    "parse_address",
    "readiness",
    "store_writable",
]

log = structlog.get_logger("schedctl.metrics")

READY_WRITE_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for SQLite's write lock before it calls the store unwritable."""

_POLL_S = 0.1
"""How often the serving thread checks for shutdown (bounds how long stop() takes)."""

Readiness = Callable[[], str | None]
"""Returns ``None`` when ready, else why not."""


class Collects(Protocol):
    """What ``/metrics`` renders: a ``CollectorRegistry``, or :class:`Metrics` (whose registry
    is made at the first scrape)."""

    def collect(self) -> Iterable[Metric]: ...


def parse_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` (every interface) -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid address {address!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def store_writable(path: Path, timeout_s: float = READY_WRITE_TIMEOUT_S) -> str | None:
    """Write a heartbeat row into the store's meta table; ``None`` on success, else the reason.

    Fails fast (``timeout_s``) when a long write holds the store, instead of waiting out the
    store's own busy timeout.
    """
    return probe_writable(path, timeout_s)


class DaemonView(Protocol):
    """What the metrics service reads from :class:`scheduler.daemon.scheduler.Daemon`."""

    @property
    def running(self) -> bool: ...

    @property
    def store(self) -> Store: ...

    def next_fire_times(self) -> Mapping[str, datetime | None]: ...


def readiness(daemon: DaemonView, timeout_s: float = READY_WRITE_TIMEOUT_S) -> str | None:
    """``None`` when the scheduler runs and the store takes a write, else the reason."""
    if not daemon.running:
        return "scheduler is not running"
    return daemon.store.probe(timeout_s)


class _One:
    """A collector of one family, so prometheus_client renders just that family."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> list[Metric]:
        return [self.metric]


class Renderer:
    """Text exposition of a registry, reusing the text of each family whose samples did not
    change since the last scrape (byte for byte what ``generate_latest`` writes).

    A family is reused when the collector hands back the very object rendered last time (no
    comparison at all), or one equal to it (name, help, type and every sample: a few µs per
    hundred samples, against ~8 µs per sample to render).
    """

    def __init__(self, registry: Collects) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[Metric, bytes]] = {}  # name -> (family, its text)
        self.rendered = 0
        """Families rendered (not reused) by the last :meth:`render`; for tests and benches."""

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        with self._lock:
            memo: dict[str, tuple[Metric, bytes]] = {}
            parts = []
            rendered = 0
            for metric in self._registry.collect():
                hit = self._memo.get(metric.name)
                if (
                    hit is not None
                    and metric.name not in memo
                    and (hit[0] is metric or hit[0] == metric)
                ):
                    text = hit[1]
                else:
                    text = generate_latest(_One(metric))
                    rendered += 1
                memo.setdefault(metric.name, (metric, text))
                parts.append(text)
            self._memo = memo
            self.rendered = rendered
            return b"".join(parts)


def send_all(sock: socket.socket, parts: list[bytes]) -> None:
    """Send ``parts`` as one gathered write (``sendmsg``), resuming after a partial send:
    head and body leave together without being copied into one buffer first."""
    views = [memoryview(part) for part in parts if part]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: each reply is one gathered send of head and body, on a socket
    with ``TCP_NODELAY`` -- written in two parts, Nagle held the body back until the client's
    delayed ACK of the head (~40 ms per scrape on a kept-alive connection). No gzip: the body is
    sent as rendered (Prometheus asks for gzip but takes plain text; on loopback or a LAN the
    compression would cost more CPU than the bytes it saves)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

            self._reply(200, self.server.renderer.render(), CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            reason = self.server.ready()
            if reason is None:
                self._reply(200, b"ready\n")
            else:
                self._reply(503, f"not ready: {reason}\n".encode())
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _reply(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.log_request(status, len(body))
        head = (
            f"{self.protocol_version} {status} {self.responses[status][0]}\r\n"
            f"Server: {self.version_string()}\r\n"
            f"Date: {self.date_time_string()}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        send_all(self.connection, [head, body])

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics_http", client=self.client_address[0], request=format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 drops SYNs when a few scrapers connect at once

    def __init__(self, host: str, port: int, registry: Collects, ready: Readiness) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.renderer = Renderer(registry)
        self.ready = ready
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        bind_without_fqdn(self)


class MetricsServer:
    """Serves ``registry`` on ``address``; port 0 picks a free port (see :attr:`port`)."""

    def __init__(self, registry: Collects, address: str, ready: Readiness) -> None:
        self._registry = registry
        self._address = address
        self._ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("metrics server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, _ = parse_address(self._address)
        host = host or "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        try:
            host, port = parse_address(self._address)
        except ValueError as exc:
            raise DaemonError(f"daemon.metrics_address: {exc}") from None
        try:
            self._server = _Server(host, port, self._registry, self._ready)
        except OSError as exc:
            raise DaemonError(
                f"daemon.metrics_address: cannot listen on {self._address}: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_S},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics_listening", url=self.url)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


class MetricsService:
    """The daemon service serving :class:`Metrics`; wire it in ``build_services``."""

    name = "metrics"

    def __init__(
        self, metrics: Metrics, address: str, ready_timeout_s: float = READY_WRITE_TIMEOUT_S
    ) -> None:
        self.metrics = metrics
        self.address = address
        self.ready_timeout_s = ready_timeout_s
        self.server: MetricsServer | None = None

    def start(self, daemon: DaemonView) -> None:
        self.metrics.attach_scheduler(daemon.next_fire_times)
        server = MetricsServer(
            self.metrics, self.address, lambda: readiness(daemon, self.ready_timeout_s)
        )
        server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.metrics.attach_scheduler(None)
        self.metrics.close()
