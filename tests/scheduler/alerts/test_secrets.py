"""Secrets come from env, files or the systemd credentials dir, and never reach a log."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from structlog.testing import capture_logs

from scheduler.alerts.secrets import Secret, load_secret
from scheduler.kernel.errors import AlertError
from scheduler.kernel.outcome import Outcome
from tests.scheduler.alerts.conftest import (
    FAILED_TESTS,
    GITHUB_TOKEN,
    REPO,
    SLACK_PATH,
    WEBHOOK_SECRET,
    FakeGitHub,
    Harness,
)
from tests.waiting import wait_for

SECRETS = (GITHUB_TOKEN, WEBHOOK_SECRET, SLACK_PATH.rsplit("/", 1)[-1])


class TestLoad:
    def test_env_wins(self, tmp_path: Path) -> None:
        """A set environment variable is used before any file."""
        (tmp_path / "tok").write_text("from-file\n")
        secret = load_secret("TOK", str(tmp_path / "tok"), env={"TOK": "from-env"})
        assert secret is not None and secret.reveal() == "from-env"

    def test_file_is_stripped(self, tmp_path: Path) -> None:
        """A secret file's trailing newline is not part of the secret."""
        (tmp_path / "tok").write_text("from-file\n")
        secret = load_secret("TOK", str(tmp_path / "tok"), env={})
        assert secret is not None and secret.reveal() == "from-file"

    def test_relative_file_in_credentials_directory(self, tmp_path: Path) -> None:
        """A relative secret file resolves in $CREDENTIALS_DIRECTORY (systemd LoadCredential)."""
        (tmp_path / "github-token").write_text("cred\n")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
        secret = load_secret(None, "github-token", env=env)
        assert secret is not None and secret.reveal() == "cred"

    def test_credential_named_after_the_env_var(self, tmp_path: Path) -> None:
        """Without env or file keys, $CREDENTIALS_DIRECTORY/<ENV NAME> is used."""
        (tmp_path / "SCHEDCTL_GITHUB_TOKEN").write_text("cred2")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
        secret = load_secret("SCHEDCTL_GITHUB_TOKEN", None, env=env)
        assert secret is not None and secret.reveal() == "cred2"

    def test_unset_is_none_and_unreadable_is_an_error(self, tmp_path: Path) -> None:
        """No source gives None; a configured file that is missing or empty is a clear error."""
        assert load_secret("NOPE", None, env={}) is None
        with pytest.raises(AlertError, match="cannot read secret file"):
            load_secret(None, str(tmp_path / "missing"), env={})
        (tmp_path / "empty").write_text("\n")
        with pytest.raises(AlertError, match="is empty"):
            load_secret(None, str(tmp_path / "empty"), env={})

    def test_secret_hides_its_value(self) -> None:
        """repr, str and f-strings of a Secret never show the value."""
        secret = Secret("hunter2")
        assert "hunter2" not in f"{secret} {secret!r} {[secret]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_secret_in_logs_errors_or_reprs(
    httpserver: HTTPServer,
    github: FakeGitHub,
    make_harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failing deliveries to every sink log, store and repr nothing secret."""
    httpserver.expect_request("/hook").respond_with_data("down", 503)
    github.fail_writes.extend([(500, {}, "oops")] * 20)
    alerts = {
        "webhooks": [
            {"name": "hook", "url": httpserver.url_for("/hook"), "secret_env": "HOOK_SECRET"}
        ],
        "slack": [{"url_env": "SLACK_URL"}],
        "github": [{"repo": REPO, "api_url": github.api_url}],
    }
    slack_url = f"http://127.0.0.1:{_closed_port()}{SLACK_PATH}"
    caplog.set_level(logging.DEBUG, logger="schedctl")
    with capture_logs() as logs:
        h = make_harness(alerts, env={"SLACK_URL": slack_url})
        h.finish("hourly", Outcome.FAILED, FAILED_TESTS)
        h.worker.start()
        wait_for(lambda: all(r.attempts >= 2 for r in h.rows()), 10, "2 attempts per row")
        h.worker.stop()
    assert {e["event"] for e in logs} >= {"alert_decided", "alert_delivery_retry"}
    assert len(h.rows()) == 3
    evidence = [
        repr(logs),
        caplog.text,
        repr(h.sinks.sinks),
        repr(h.worker),
        repr(h.recorder),
        repr([(r.last_error, r.payload) for r in h.rows()]),
    ]
    for secret in SECRETS:
        for text in evidence:
            assert secret not in text


def test_missing_secret_disables_only_that_sink(
    httpserver: HTTPServer, github: FakeGitHub, make_harness: Callable[..., Harness]
) -> None:
    """A webhook whose secret is unset is disabled (never sent unsigned); others still work."""
    alerts = {
        "webhooks": [
            {"name": "hook", "url": httpserver.url_for("/hook"), "secret_env": "UNSET_SECRET"}
        ],
        "github": [{"repo": REPO, "api_url": github.api_url}],
    }
    with capture_logs() as logs:
        h = make_harness(alerts)
    assert [s.name for s in h.sinks.sinks] == ["github"]
    assert "UNSET_SECRET" in h.sinks.disabled["hook"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["alert_sink_disabled"]
