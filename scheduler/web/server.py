"""The web pages over HTTP: stdlib ``http.server``, one thread per connection, GET only.

Routes (all read-only)::

    /                          Overview
    /runs?tier=&outcome=&trigger=&since=&until=&before=    Runs (50 a page, keyset by id)
    /runs/<id>[?sort=duration|memory|name]                 Run
    /runs/<id>/log             log tail, streaming while the run is active
    /runs/<id>/log.txt?offset=N                           the log from a byte offset (JSON)
    /runs/<id>/artifacts/<junit.xml|coverage.xml|output.log>   served as text/plain
    /test?id=<nodeid>          Test
    /flaky                     Flaky & quarantine
    /markers                   Markers (the marker audit, when it exists)
    /healthz                   "ok"

Access: a loopback bind serves anyone on the host; any other bind needs the control API's token
(``Authorization: Bearer <token>``, or HTTP Basic with the token as password so a browser can
ask for it) and :func:`make_server` refuses to start without one. A loopback listener answers
only requests whose ``Host`` is a loopback name (DNS rebinding). Errors answer one line, never
a traceback (404 unknown run/test/page, 400 bad filter, 503 store unreadable, 500 otherwise).
Every page carries a Content-Security-Policy that only runs the page's own nonce-tagged script,
so even text that escaped escaping could not execute.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import re
import secrets
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from scheduler.kernel.errors import DaemonError, StoreError, UnknownRunError, UsageError
from scheduler.kernel.httpbind import bind_without_fqdn

if TYPE_CHECKING:  # the pages and Jinja2 load with the first page (see scheduler.web)
    import jinja2

    from scheduler.web.pages import Page, Pages

log = structlog.get_logger("schedctl.web")

IO_TIMEOUT_S = 10.0
MAX_QUERY_FIELDS = 20
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
_RUN = re.compile(r"/runs/([^/]+)(/log|/log\.txt|/artifacts/([^/]+))?")

__all__ = ["App", "Response", "WebApp", "WebServer", "make_server", "parse_address"]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


def environment() -> jinja2.Environment:
    """The templates' Jinja2 environment (imported here: an idle daemon never loads jinja2)."""
    import jinja2

    from scheduler.web.charts import outcome_class

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scheduler.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["outcome_class"] = outcome_class
    return env


class WebApp:
    """Maps a GET to a :class:`Response`; no sockets here (the benchmark and tests call it)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self._env: jinja2.Environment | None = None
        self._env_lock = threading.Lock()

    @property
    def env(self) -> jinja2.Environment:
        """Built on the first page rendered: a daemon nobody browses keeps Jinja2 unloaded."""
        with self._env_lock:
            if self._env is None:
                self._env = environment()
            return self._env

    def handle(self, target: str) -> Response:
        from scheduler.web.pages import NotFound

        try:
            return self._route(target)
        except (NotFound, UnknownRunError) as exc:
            return self._error(404, "Not found", str(exc))
        except UsageError as exc:
            return self._error(400, "Bad request", str(exc))
        except StoreError as exc:
            log.warning("web_store_unreadable", error=str(exc))
            return self._error(503, "Store unavailable", "the state store cannot be read now")
        except Exception:
            log.exception("web_page_crashed", target=target[:300])
            return self._error(500, "Internal error", "internal error; see the daemon log")

    def _route(self, target: str) -> Response:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        query = _query(url.query)
        if path == "/":
            return self.render(self.pages.overview())
        if path == "/runs":
            return self.render(self.pages.runs(query))
        if path == "/test":
            return self.render(self.pages.test(query))
        if path == "/flaky":
            return self.render(self.pages.flaky())
        if path == "/markers":
            return self.render(self.pages.markers())
        if path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        match = _RUN.fullmatch(path)
        if match is None:
            from scheduler.web.pages import NotFound

            raise NotFound(f"no page {unquote(path)[:200]!r}")
        run, tail, artifact = match.group(1), match.group(2), match.group(3)
        if tail is None:
            return self.render(self.pages.run(run, query))
        if tail == "/log":
            return self.render(self.pages.log(run))
        if tail == "/log.txt":
            chunk = self.pages.log_chunk(run, query)
            return Response(200, json.dumps(chunk).encode(), "application/json")
        file = self.pages.artifact(run, unquote(artifact or ""))
        with file.open("rb") as fh:
            data = fh.read(MAX_ARTIFACT_BYTES)
        return Response(200, data, "text/plain; charset=utf-8")

    def render(self, page: Page) -> Response:
        nonce = secrets.token_urlsafe(12)
        html = self.env.get_template(page.template).render(**page.context, nonce=nonce)
        return Response(page.status, html.encode(), headers={"X-Nonce": nonce})

    def _error(self, status: int, title: str, message: str) -> Response:
        from scheduler.web.pages import Page

        try:
            return self.render(
                Page("error.html", {"title": title, "message": message, "status": status}, status)
            )
        except Exception:  # the error page itself failed: plain text, still no traceback
            log.exception("web_error_page_crashed")
            return Response(status, f"{status} {title}\n".encode(), "text/plain; charset=utf-8")


def _query(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"malformed query string: {str(exc)[:200]}") from None
    return dict(pairs)


def _security_headers(nonce: str | None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            f"script-src {script}; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    timeout = IO_TIMEOUT_S
    server_version = "schedctl-web"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        self._send(Response(405, b"read-only: GET only\n", "text/plain; charset=utf-8",
                            {"Allow": "GET, HEAD"}), head=False)  # fmt: skip

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web_request", line=format % args)

    def _serve(self, head: bool) -> None:
        if not self.server.host_allowed(self.headers.get("Host")):
            self._send(Response(421, b"unexpected Host header for a loopback listener\n",
                                "text/plain; charset=utf-8"), head)  # fmt: skip
            return
        if not self.server.authorised(self.headers.get("Authorization")):
            self._send(Response(401, b"authorization required: the API token\n",
                                "text/plain; charset=utf-8",
                                {"WWW-Authenticate": 'Basic realm="schedctl"'}), head)  # fmt: skip
            return
        self._send(self.server.app.handle(self.path), head)

    def _send(self, response: Response, head: bool) -> None:
        headers = dict(response.headers)
        nonce = headers.pop("X-Nonce", None)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**_security_headers(nonce), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        try:
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("web_client_gone", path=self.path[:200])


class App(Protocol):
    """What a :class:`WebServer` serves: :class:`WebApp`, or the daemon's app that builds one
    at the first request."""

    def handle(self, target: str) -> Response: ...


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, host: str, port: int, family: int, app: App, token: str | None, loopback: bool
    ) -> None:
        self.address_family = family
        self.app = app
        self.loopback = loopback
        self._token = token.encode() if token else None
        super().__init__((host, port), _Handler, bind_and_activate=False)
        self.allow_reuse_address = True

    def authorised(self, header: str | None) -> bool:
        if self.loopback:
            return True
        if self._token is None:  # make_server refuses this; a direct caller gets nothing served
            return False
        scheme, _, value = (header or "").partition(" ")
        presented = value.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(presented, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            presented = decoded.partition(":")[2]
        elif scheme.lower() != "bearer":
            return False
        return bool(presented) and hmac.compare_digest(presented.encode(), self._token)

    def host_allowed(self, header: str | None) -> bool:
        """On loopback (no token), only loopback host names: a page elsewhere that rebinds its
        own DNS name to 127.0.0.1 must not read these pages through the visitor's browser."""
        if not self.loopback or header is None:
            return True
        host = header.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        return is_loopback(host) or host.endswith(".localhost")

    def server_bind(self) -> None:
        bind_without_fqdn(self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web_connection_error", exc_info=True)

    @property
    def url(self) -> str:
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"http://{host}:{self.server_port}/"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def parse_address(address: str, key: str = "daemon.web_address") -> tuple[str, int, int]:
    """``host:port`` or ``[v6]:port`` -> ``(host, port, family)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise UsageError(f"{key} {address!r}: expected host:port (e.g. 127.0.0.1:9465)")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return host, int(port), family


def make_server(
    address: str, app: App, token: str | None, *, key: str = "daemon.web_address"
) -> WebServer:
    """A bound, listening server.

    Raises:
        UsageError: a malformed address, or a non-loopback one without a token (exit code 2).
        DaemonError: the address cannot be bound (in use, not local).
    """
    host, port, family = parse_address(address, key)
    loopback = is_loopback(host)
    if not loopback and not token:
        raise UsageError(
            f"{key} {address} is not a loopback address: the web pages need the API token "
            "there ($SCHEDCTL_API_TOKEN or daemon.api.token_env/token_file); refusing to start"
        )
    server = WebServer(host, port, family, app, token, loopback)
    try:
        server.server_bind()
        server.server_activate()
    except OSError as exc:
        server.server_close()
        raise DaemonError(f"{key}: cannot listen on {address}: {exc.strerror or exc}") from None
    return server


def serve_in_thread(server: WebServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    return thread


def stop(server: WebServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    with contextlib.suppress(OSError):
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)
