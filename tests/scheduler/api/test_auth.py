"""Who may do what: unix callers freely, TCP callers only with the configured bearer token."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.api import load_token
from scheduler.api.server import Auth
from scheduler.config import ApiConfig
from scheduler.kernel.errors import DaemonError
from scheduler.kernel.outcome import Outcome
from tests.scheduler.api.conftest import TOKEN, Harness, raw, wait_final


class TestUnixAuth:
    def test_post_over_unix_needs_no_token(self, start: Callable[..., Harness]) -> None:
        """A POST over the unix socket is accepted without a token; the run has trigger api."""
        h = start()
        reply = h.unix().submit("hourly")
        assert reply["pid"] > 0 and reply["trigger"] == "api"
        assert wait_final(h.store, reply["run_id"]) is Outcome.PASSED


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
