"""The control API's HTTP side: a unix socket (always) and TCP (optional), stdlib only.

``http.server`` is enough for a handful of JSON endpoints on a box that serves a few humans
and scripts, and adds no dependency to a daemon that must stay small. Each connection gets a
thread; event streams are HTTP/1.0 bodies closed at the end of the run.

Authorisation: over the unix socket, file permissions (0660, state dir owned by the service
user) are the check. Over TCP, every request that changes state needs ``Authorization: Bearer
<token>``; without a configured token such requests are refused outright. On a TCP listener that
is not loopback, reads need the token too (status carries argv, paths and failure text).

Bounded against idle and hostile clients: each read or write of a connection times out after
:data:`IO_TIMEOUT_S`, and each listener serves at most ``max_connections`` at once -- a
connection beyond that is answered 503 and closed at once, so 2,000 idle sockets cost the
daemon no more than its cap of descriptors and threads, and the unix socket (its own listener,
its own cap) keeps answering.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import structlog

from scheduler.api.address import socket_path, unix_address
from scheduler.api.routes import BadRequest, Conflict, ControlApi, Stream
from scheduler.config import ApiConfig, Config
from scheduler.kernel.errors import DaemonError, UnknownRunError, UsageError
from scheduler.kernel.httpbind import bind_without_fqdn

if TYPE_CHECKING:
    from scheduler.daemon.scheduler import Daemon

log = structlog.get_logger("schedctl.api")

MAX_BODY = 64 * 1024
SOCKET_MODE = 0o660
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
IO_TIMEOUT_S = 10.0
"""Per read/write of a connection: a client that sends no header for this long is dropped."""
MAX_CONNECTIONS = 64
"""Connections one listener serves at once (threads and descriptors); the rest get a 503."""
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "too many connections; try again", "status": 503}\n'
)


def load_token(api: ApiConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from ``$<token_env>``, else ``token_file`` (relative paths resolve in
    ``$CREDENTIALS_DIRECTORY``, where systemd's ``LoadCredential=`` puts it)."""
    env = os.environ if env is None else env
    value = env.get(api.token_env, "").strip()
    if value:
        return value
    if api.token_file:
        path = Path(api.token_file)
        if not path.is_absolute() and env.get(CREDENTIALS_ENV):
            path = Path(env[CREDENTIALS_ENV]) / path
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise DaemonError(
                f"daemon.api.token_file {path}: cannot read: {exc.strerror}"
            ) from None
        if not value:
            raise DaemonError(f"daemon.api.token_file {path} is empty")
        return value
    return None


class Auth:
    """Decides whether a state-changing request may proceed."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def deny(
        self, header: str | None, over_tcp: bool, *, mutating: bool = True, loopback: bool = True
    ) -> tuple[int, str] | None:
        """``None`` to allow, else ``(status, message)``.

        Reads over a loopback TCP listener are free; over any other listener they need the token.
        """
        if not over_tcp or (not mutating and loopback):
            return None
        if self._token is None:
            what = "state-changing requests" if mutating else "reads on a non-loopback listener"
            return 401, f"{what} over TCP are disabled: no API token configured"
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return 401, "missing bearer token (Authorization: Bearer <token>)"
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return 401, "invalid bearer token"
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = IO_TIMEOUT_S
    server_version = "schedctl"
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s", "status": %(code)d}'

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def address_string(self) -> str:
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api_request", line=format % args, client=self.address_string())

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            route, match, known = self.server.api.match(method, url.path.rstrip("/") or "/")
            if route is None or match is None:
                status = 405 if known else 404
                self._json(status, {"error": f"{method} {url.path}: no such endpoint"})
                return
            denied = self.server.auth.deny(
                self.headers.get("Authorization"),
                self.server.tcp,
                mutating=route.mutating,
                loopback=self.server.loopback,
            )
            if denied is not None:
                self._deny(*denied)
                return
            body = self._body() if method == "POST" else None
            result = route.handler(match, _query(url.query), body)
        except Exception as exc:
            self._error(exc)
            return
        if isinstance(result, Stream):
            self._stream(result)
        else:
            self._json(result.status, result.body)

    def _body(self) -> Any:
        length_text = self.headers.get("Content-Length", "0").strip()
        if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 12:
            raise BadRequest("Content-Length must be a number")
        length = int(length_text)
        if length > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"request body is not JSON: {str(exc)[:200]}") from None

    def _error(self, exc: Exception) -> None:
        if isinstance(exc, BadRequest):
            self._json(400, {"error": str(exc)})
        elif isinstance(exc, UnknownRunError):
            self._json(404, {"error": str(exc)})
        elif isinstance(exc, Conflict):
            self._json(409, {"error": str(exc)})
        elif isinstance(exc, UsageError):
            self._json(422, {"error": str(exc), "kind": type(exc).__name__})
        elif isinstance(exc, DaemonError):
            self._json(503, {"error": str(exc)})
        else:
            log.exception("api_handler_crashed", path=self.path)
            self._json(500, {"error": "internal error; see the daemon log"})

    def _deny(self, status: int, message: str) -> None:
        log.warning("api_denied", path=self.path, client=self.address_string(), status=status)
        headers = {"WWW-Authenticate": 'Bearer realm="schedctl"'} if status == 401 else {}
        self._json(status, {"error": message}, headers)

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body, default=str).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("api_client_gone", path=self.path)

    def _stream(self, stream: Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.close_connection = True
        try:
            for line in stream.lines:
                self.wfile.write(json.dumps(line, default=str).encode() + b"\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("api_stream_client_gone", path=self.path)
        except Exception:
            log.exception("api_stream_crashed", path=self.path)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _query(text: str) -> dict[str, str]:
    try:
        return dict(parse_qsl(text, max_num_fields=20, errors="strict"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed query string: {str(exc)[:200]}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: Any,
        api: ControlApi,
        auth: Auth,
        *,
        tcp: bool,
        family: int,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.address_family = family
        self.api = api
        self.auth = auth
        self.tcp = tcp
        self.loopback = not tcp or _is_loopback(address[0])
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        self._last_refusal_log = -60.0
        super().__init__(address, _Handler, bind_and_activate=False)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Take a connection slot, or answer 503 and let socketserver close the connection."""
        if self._slots.acquire(blocking=False):
            return True
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:  # a flood must not flood the journal too
            self._last_refusal_log = now
            log.warning("api_connection_refused", reason="connection cap", total=self.refused)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: give the slot back
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished or timed out is routine: logged, never printed to stderr."""
        log.debug("api_connection_error", exc_info=True)

    def server_bind(self) -> None:
        bind_without_fqdn(self)


class _UnixServer(_Server):
    def __init__(self, path: Path, api: ControlApi, auth: Auth) -> None:
        super().__init__(str(path), api, auth, tcp=False, family=socket.AF_UNIX)
        self.path = path

    def server_bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with unix_address(self.path) as address:
            self.socket.bind(address)
        os.chmod(self.path, SOCKET_MODE)
        self.server_name, self.server_port = "localhost", 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def parse_tcp(address: str) -> tuple[str, int, int]:
    """``host:port`` or ``[v6]:port`` -> ``(host, port, family)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DaemonError(f"daemon.api.tcp {address!r}: expected host:port")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return host, int(port), family


class ApiService:
    """The daemon's control API as a :class:`~scheduler.daemon.scheduler.Service`."""

    name = "api"

    def __init__(self, config: Config, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.socket_path = socket_path(config)
        self.tcp_address: tuple[str, int] | None = None
        self._stopping = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    def start(self, daemon: Daemon) -> None:
        api_cfg = self.config.daemon.api
        token = load_token(api_cfg, self.env)
        auth = Auth(token)
        api = ControlApi(daemon, self._stopping)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._serve(_UnixServer(self.socket_path, api, auth))
        if api_cfg.tcp:
            host, port, family = parse_tcp(api_cfg.tcp)
            server = _Server((host, port), api, auth, tcp=True, family=family)
            server.allow_reuse_address = True
            self._serve(server)
            self.tcp_address = (server.server_name, server.server_port)
            if token is None:
                log.warning(
                    "api_tcp_without_token",
                    address=api_cfg.tcp,
                    detail=f"set ${api_cfg.token_env} or daemon.api.token_file; "
                    "POST requests over TCP are refused until then",
                )
        log.info("api_listening", socket=str(self.socket_path), tcp=self.tcp_address)

    def _serve(self, server: _Server) -> None:
        try:
            server.server_bind()
            server.server_activate()
        except OSError as exc:
            server.server_close()
            raise DaemonError(
                f"control API cannot listen on {server.server_address}: {exc}"
            ) from exc
        self._servers.append(server)
        thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._servers.clear()
        self._threads.clear()
