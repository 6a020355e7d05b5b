"""The pages over real HTTP: status codes, no stack traces, escaping, access off loopback."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from scheduler.kernel.errors import DaemonError, UsageError
from scheduler.web import WebApp
from scheduler.web.server import WebServer, make_server, serve_in_thread, stop
from tests.scheduler.web.conftest import pages_for
from tests.scheduler.web.seed import BROKEN, EVIL, TEMPLATE, Seeded


def get(
    server: WebServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def assert_no_traceback(body: str) -> None:
    for leak in ("Traceback", 'File "', "sqlalchemy", "Error:"):
        assert leak not in body, body[:500]


class TestStatus:
    @pytest.mark.parametrize("path", [
        "/", "/runs", "/flaky", "/markers", "/healthz", f"/test?id={quote(BROKEN)}",
        "/runs?tier=hourly&outcome=failed&trigger=schedule&since=2026-01-01&until=2026-12-31",
    ])  # fmt: skip
    def test_pages_answer_200_with_a_csp(self, server: WebServer, path: str) -> None:
        status, headers, body = get(server, path)
        assert status == 200, body[:300]
        assert "script-src" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"

    def test_run_log_and_artifacts(self, server: WebServer, seeded: Seeded) -> None:
        run = seeded.red_run
        for path in (f"/runs/{run}", f"/runs/{run}/log", f"/runs/{run}/artifacts/junit.xml"):
            status, headers, _ = get(server, path)
            assert status == 200, path
        status, headers, body = get(server, f"/runs/{run}/artifacts/junit.xml")
        assert headers["Content-Type"].startswith("text/plain")  # never rendered as markup
        assert "<script>x</script>" in body

    @pytest.mark.parametrize("path", [
        "/runs/999999", "/runs/abc", "/runs/%C2%B2", "/runs/1/artifacts/etc-passwd",
        "/runs/1/artifacts/..%2F..%2Fschedctl.db", "/test?id=tests/nope.py::test_none",
        "/nowhere", "/runs/999999/log", "/runs/999999/log.txt",
    ])  # fmt: skip
    def test_unknown_things_are_404(self, server: WebServer, path: str) -> None:
        status, _, body = get(server, path)
        assert status == 404, body[:300]
        assert_no_traceback(body)

    @pytest.mark.parametrize("query", [
        "tier=nope", "outcome=purple", "trigger=%3Cscript%3E", "since=yesterday",
        "until=2026-02-30", "before=-3", "before=1e9", "colour=red",
        "since=2026-03-02&until=2026-03-01",
    ])  # fmt: skip
    def test_bad_filters_are_400_and_name_the_filter(self, server: WebServer, query: str) -> None:
        status, _, body = get(server, f"/runs?{query}")
        assert status == 400, body[:300]
        key = query.split("=", maxsplit=1)[0]
        assert key in body or "since must be" in body
        assert_no_traceback(body)

    @pytest.mark.parametrize("path", ["/test", "/runs/1?sort=colour", "/runs/1/log.txt?offset=x"])
    def test_bad_parameters_are_400(self, server: WebServer, path: str) -> None:
        status, _, body = get(server, path)
        assert status == 400, body[:300]

    def test_writes_are_refused_and_head_works(self, server: WebServer) -> None:
        assert get(server, "/", method="POST")[0] == 405
        assert get(server, "/", method="DELETE")[0] == 405
        status, headers, body = get(server, "/", method="HEAD")
        assert status == 200 and body == "" and int(headers["Content-Length"]) > 0


class TestNoStackTraces:
    def test_a_crashing_page_answers_500_without_details(self, seeded: Seeded) -> None:
        class Boom:
            def __getattr__(self, name: str) -> object:
                raise RuntimeError("secret internals at /etc/schedctl")

        pages = pages_for(seeded)
        pages.store = Boom()  # type: ignore[assignment]
        srv = make_server("127.0.0.1:0", WebApp(pages), None)
        thread = serve_in_thread(srv)
        try:
            status, _, body = get(srv, "/")
        finally:
            stop(srv, thread)
        assert status == 500
        assert "secret internals" not in body and "RuntimeError" not in body
        assert_no_traceback(body)


class TestEscaping:
    def test_test_ids_messages_reasons_and_commits_are_text(
        self, server: WebServer, seeded: Seeded
    ) -> None:
        _, _, body = get(server, f"/runs/{seeded.red_run}")
        assert "<script>window.__pwned" not in body
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
        assert "<img src=x" not in body and "&lt;img src=x" in body
        assert "<i>really</i>" not in body and "&lt;i&gt;really&lt;/i&gt;" in body
        assert "<b>break</b>" not in body and "&lt;b&gt;break&lt;/b&gt;" in body
        assert "{{ 7*7 }}" in body  # shown as written, never evaluated
        assert "<script" not in body  # the run page has no script at all

    def test_the_template_test_id_page_shows_it_literally(self, server: WebServer) -> None:
        status, _, body = get(server, f"/test?id={quote(TEMPLATE)}")
        assert status == 200
        assert "test_y[{{ 7*7 }}]" in body and "test_y[49]" not in body

    def test_the_script_test_id_page_escapes_it(self, server: WebServer) -> None:
        status, _, body = get(server, f"/test?id={quote(EVIL)}")
        assert status == 200
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
        assert "<script>window" not in body

    def test_the_log_page_escapes_the_log(self, server: WebServer, seeded: Seeded) -> None:
        _, _, body = get(server, f"/runs/{seeded.red_run}/log")
        assert "&lt;b&gt;not bold&lt;/b&gt;" in body


class TestAccess:
    def test_a_non_loopback_bind_without_a_token_refuses_to_start(self, app: WebApp) -> None:
        with pytest.raises(UsageError, match=r"daemon\.web_address 0\.0\.0\.0:0 is not a loopback"):
            make_server("0.0.0.0:0", app, None)

    def test_a_malformed_address_names_the_key(self, app: WebApp) -> None:
        with pytest.raises(UsageError, match=r"--address 'nope': expected host:port"):
            make_server("nope", app, None, key="--address")

    def test_a_busy_port_is_a_daemon_error(self, server: WebServer, app: WebApp) -> None:
        with pytest.raises(DaemonError, match="cannot listen"):
            make_server(f"127.0.0.1:{server.server_port}", app, None)

    @pytest.fixture
    def exposed(self, app: WebApp) -> Iterator[WebServer]:
        srv = make_server("0.0.0.0:0", app, "s3cret-token")
        thread = serve_in_thread(srv)
        yield srv
        stop(srv, thread)

    def test_off_loopback_every_page_needs_the_token(self, exposed: WebServer) -> None:
        status, headers, _ = get(exposed, "/")
        assert status == 401 and "Basic" in headers["WWW-Authenticate"]
        assert get(exposed, "/runs", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(exposed, "/", {"Authorization": "Bearer s3cret-token"})[0] == 200
        basic = base64.b64encode(b"me:s3cret-token").decode()
        assert get(exposed, "/flaky", {"Authorization": f"Basic {basic}"})[0] == 200
        assert get(exposed, "/", {"Authorization": "Basic !!notbase64"})[0] == 401

    def test_loopback_needs_no_token(self, server: WebServer) -> None:
        assert get(server, "/")[0] == 200

    @pytest.mark.parametrize("host", ["localhost:9465", "127.0.0.1", "[::1]:80", "x.localhost"])
    def test_loopback_answers_loopback_host_names(self, server: WebServer, host: str) -> None:
        assert get(server, "/", {"Host": host})[0] == 200

    @pytest.mark.parametrize("host", ["evil.example", "evil.example:9465", "10.0.0.1"])
    def test_loopback_refuses_other_host_names(self, server: WebServer, host: str) -> None:
        """DNS rebinding: a foreign site's name pointed at 127.0.0.1 reads nothing."""
        status, _, body = get(server, "/", {"Host": host})
        assert status == 421 and "schedctl" not in body
