"""What a token holder or a careless client may not do (issue 20, findings 1, 6, 7 and 8)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from scheduler.api.server import Auth, _is_loopback
from tests.scheduler.api.conftest import TOKEN, Harness, raw

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class TestSubmitBody:
    @pytest.mark.parametrize(
        "field",
        [
            '"runner": "local"',
            '"runner": "docker"',
            '"image": "evil:latest"',
            '"env": {"A": "1"}',
            '"mounts": {"/": "/host"}',
        ],
    )
    def test_runner_image_env_mounts_are_refused(
        self, start: Callable[..., Harness], field: str
    ) -> None:
        """Finding 1: the API cannot move a run out of its runner or change its box; 400, no row."""
        h = start()
        body = ('{"tier": "hourly", ' + field + "}").encode()
        status, reply = raw(h, "POST", "/v1/runs", body, AUTH)
        assert status == 400, reply
        assert "unknown field" in reply["error"]
        assert h.store.list_runs() == []

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b'{"tier": "hourly", "timeout_s": Infinity}', "not JSON"),
            (b'{"tier": "hourly", "timeout_s": NaN}', "not JSON"),
            (b'{"tier": "hourly", "timeout_s": 1e999}', "timeout_s"),
            (b'{"tier": "hourly", "timeout_s": 61}', "longer than tier 'hourly'"),
            (b'{"tier": "hourly", "timeout_s": "\\u00b2"}', "timeout_s"),
            (b'{"tier": "hourly", "markers": "-p evil"}', "marker expression"),
            (b'{"tier": "hourly", "markers": ""}', "marker expression"),
            (b'{"tier": "hourly", "markers": "a and (b"}', "marker expression"),
            (b'{"tier": "hourly", "markers": "x; rm -rf /"}', "marker expression"),
            (b"[" * 50_000, "not JSON"),
            (b"[" * 100_000, "over 65536 bytes"),
            (b'{"tier": "hourly"', "not JSON"),
            (b"\xff\xfe", "not JSON"),
            (b'"hourly"', "JSON object"),
        ],
    )
    def test_malformed_bodies_are_400(
        self, start: Callable[..., Harness], body: bytes, expected: str
    ) -> None:
        """Finding 7: infinite, unbounded or non-pytest values are a 400 naming the field."""
        h = start()
        status, reply = raw(h, "POST", "/v1/runs", body, AUTH)
        assert status == 400, reply
        assert expected in reply["error"]
        assert h.store.list_runs() == []

    def test_shorter_timeout_and_valid_markers_are_accepted(
        self, start: Callable[..., Harness]
    ) -> None:
        """A request may shorten the tier's timeout and pick a marker expression."""
        h = start()
        body = b'{"tier": "hourly", "timeout_s": 30, "markers": "hourly and not slow"}'
        status, reply = raw(h, "POST", "/v1/runs", body, AUTH)
        assert status == 202, reply


class TestMalformedIds:
    @pytest.mark.parametrize(
        "path",
        [
            "/v1/runs/%C2%B2",
            "/v1/runs/99999999999999999999999",
            "/v1/runs/9223372036854775808",
            "/v1/runs/-1",
            "/v1/runs/abc/events",
            "/v1/runs?limit=%C2%B2",
            "/v1/runs?limit=99999999999999999999",
            "/v1/runs?limit=%FF",
        ],
    )
    def test_malformed_ids_and_params_are_400(
        self, start: Callable[..., Harness], path: str
    ) -> None:
        """Finding 8: odd ids and limits are 400 JSON, never a 500 or a traceback."""
        h = start()
        status, reply = raw(h, "GET", path, None, {})
        assert status == 400, reply
        assert "Traceback" not in json.dumps(reply)

    def test_raw_unicode_digits_in_the_path_are_400(self, start: Callable[..., Harness]) -> None:
        """A superscript two sent as raw UTF-8 bytes is no run id: 400."""
        h = start()
        assert h.api.tcp_address is not None
        with socket.create_connection(h.api.tcp_address, timeout=10) as conn:
            conn.sendall(b"GET /v1/runs/\xc2\xb2 HTTP/1.0\r\n\r\n")
            reply = b"".join(iter(lambda: conn.recv(4096), b""))
        assert reply.startswith(b"HTTP/1.0 400"), reply[:200]

    def test_largest_id_is_a_plain_404(self, start: Callable[..., Harness]) -> None:
        """The largest id SQLite can hold is looked up: unknown, so 404."""
        h = start()
        status, _ = raw(h, "GET", "/v1/runs/9223372036854775807", None, {})
        assert status == 404


class TestReadAuth:
    def test_reads_on_non_loopback_listener_need_the_token(self) -> None:
        """Finding 6: GETs over a non-loopback TCP listener need the token; loopback ones do not."""
        auth = Auth(TOKEN)
        assert auth.deny(None, over_tcp=True, mutating=False, loopback=True) is None
        assert auth.deny(None, over_tcp=True, mutating=False, loopback=False) is not None
        assert auth.deny(AUTH["Authorization"], True, mutating=False, loopback=False) is None
        assert Auth(None).deny(None, over_tcp=True, mutating=False, loopback=False) is not None
        assert auth.deny(None, over_tcp=False, mutating=False, loopback=False) is None

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
         ("::", False), ("10.1.2.3", False)],
    )  # fmt: skip
    def test_which_listeners_are_loopback(self, host: str, loopback: bool) -> None:
        """Wildcard and routable addresses are not loopback."""
        assert _is_loopback(host) is loopback
