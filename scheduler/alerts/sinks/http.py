"""The one boundary between the sinks and ``requests``: every failure becomes an ``AlertError``.

Messages name the sink's *safe* target ("slack webhook", "github api.github.com/org/repo"), never
the URL: a Slack webhook URL is itself a secret, and exception chains are cut (``from None``) so
tracebacks in logs cannot carry it either.

Classification: connection problems, timeouts, 408, 429 and 5xx are transient; GitHub's primary
and secondary rate limits (403 with ``x-ratelimit-remaining: 0``, ``Retry-After`` or "rate limit"
in the body) are transient with the server's delay; every other 4xx is permanent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import requests

from scheduler.alerts.retry import parse_reset_epoch, parse_retry_after
from scheduler.kernel.clock import utcnow
from scheduler.kernel.errors import AlertError

DEFAULT_TIMEOUT_S = 10.0
SECONDARY_LIMIT_DEFAULT_S = 60.0
_BODY_SNIPPET = 300


class HttpClient:
    """``requests`` calls for one sink, with its safe target name and error mapping."""

    def __init__(
        self,
        session: requests.Session,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.target = target
        self.timeout_s = timeout_s
        self.clock = clock

    def __repr__(self) -> str:
        return f"HttpClient(target={self.target!r})"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send; returns 2xx responses (and ``ok_statuses``), raises ``AlertError`` otherwise."""
        try:
            response = self.session.request(
                method,
                url,
                headers=dict(headers or {}),
                json=json,
                data=data,
                params=dict(params) if params else None,
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise AlertError(f"{self.target}: timed out after {self.timeout_s:g}s") from None
        except requests.ConnectionError:
            raise AlertError(f"{self.target}: connection failed") from None
        except requests.RequestException as exc:
            raise AlertError(
                f"{self.target}: request failed ({type(exc).__name__})", permanent=True
            ) from None
        if 200 <= response.status_code < 300 or response.status_code in ok_statuses:
            return response
        raise self._status_error(method, response)

    def json_body(self, response: requests.Response) -> Any:
        """The response's JSON; a body that is not JSON (a proxy's error page) is an AlertError."""
        try:
            return response.json()
        except ValueError:
            raise AlertError(
                f"{self.target}: HTTP {response.status_code} answer is not JSON: "
                f"{_snippet(response)}"
            ) from None

    def _status_error(self, method: str, response: requests.Response) -> AlertError:
        status = response.status_code
        body = _snippet(response)
        message = f"{self.target}: {method} answered HTTP {status}" + (f": {body}" if body else "")
        now = self.clock()
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        if status in {403, 429}:
            limited = retry_after
            if limited is None and response.headers.get("x-ratelimit-remaining") == "0":
                limited = parse_reset_epoch(response.headers.get("x-ratelimit-reset"), now)
            if limited is None and "rate limit" in body.lower():
                limited = SECONDARY_LIMIT_DEFAULT_S
            if limited is not None or status == 429:
                return AlertError(f"{message} (rate limited)", retry_after_s=limited)
            return AlertError(message, permanent=True)
        if status in (408,) or status >= 500:
            return AlertError(message, retry_after_s=retry_after)
        return AlertError(message, permanent=True)


def _snippet(response: requests.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, requests.RequestException):
        return ""
    text = " ".join(text.split())
    return text if len(text) <= _BODY_SNIPPET else text[:_BODY_SNIPPET] + "…"
