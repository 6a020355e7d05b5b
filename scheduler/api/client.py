"""A small client for the control API, over the daemon's unix socket (or TCP with a token).

HTTP errors become the project's exceptions here, once: 400/404/409/422 are usage errors
(exit code 2), everything else a :class:`~scheduler.kernel.errors.DaemonError`.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from scheduler.api.address import socket_path, unix_address
from scheduler.daemon.lock import StateLock
from scheduler.kernel.errors import DaemonError, UnknownRunError, UsageError

if TYPE_CHECKING:
    from scheduler.config import Config


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with unix_address(self.path) as address:
                sock.connect(address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ApiClient:
    """Calls ``/v1`` endpoints; ``timeout`` bounds each socket operation, not a whole stream."""

    def __init__(
        self,
        *,
        unix: Path | None = None,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        connect_wait_s: float = 10.0,
    ) -> None:
        if (unix is None) == (tcp is None):
            raise ValueError("give exactly one of unix= or tcp=")
        self.unix = unix
        self.tcp = tcp
        self.token = token
        self.timeout = timeout
        self.connect_wait_s = connect_wait_s

    @property
    def where(self) -> str:
        return str(self.unix) if self.unix else f"{self.tcp[0]}:{self.tcp[1]}"  # type: ignore[index]

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        if self.unix is not None:
            return _UnixConnection(self.unix, t)
        assert self.tcp is not None
        return http.client.HTTPConnection(self.tcp[0], self.tcp[1], timeout=t)

    def _send(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection(timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + self.connect_wait_s
        while True:
            try:
                conn.connect()
                break
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                # A daemon that just took the lock may not listen yet (or a crashed one left
                # its socket file): nothing was sent, so waiting and retrying is safe.
                conn.close()
                if time.monotonic() >= deadline:
                    raise DaemonError(
                        f"cannot reach the schedctl daemon at {self.where}: {exc}"
                    ) from exc
                time.sleep(0.1)
            except OSError as exc:
                conn.close()
                raise DaemonError(
                    f"cannot reach the schedctl daemon at {self.where}: {exc}"
                ) from exc
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except OSError as exc:
            conn.close()
            raise DaemonError(f"the schedctl daemon at {self.where} failed: {exc}") from exc

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn, response = self._send(method, path, body)
        try:
            raw = response.read()
        except OSError as exc:
            raise DaemonError(f"the daemon at {self.where} hung up: {exc}") from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = {"error": raw.decode(errors="replace")[:200]}
        if response.status >= 400:
            raise _error(response.status, data)
        return data

    # -- endpoints -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/status")
        return result

    def tiers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/tiers")
        return result

    def runs(self, tier: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = urlencode({k: v for k, v in {"tier": tier, "limit": limit}.items() if v})
        result: list[dict[str, Any]] = self.request("GET", f"/v1/runs?{query}")
        return result

    def run(self, run_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/runs/{run_id}")
        return result

    def submit(self, tier: str, **fields: Any) -> dict[str, Any]:
        body = {"tier": tier, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = self.request("POST", "/v1/runs", body)
        return result

    def cancel(self, run_id: int, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        result: dict[str, Any] = self.request("POST", f"/v1/runs/{run_id}/cancel", body)
        return result

    def gpus(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/gpus")
        return result

    def events(self, run_id: int, idle_timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """The run's NDJSON event stream; ends after the ``finished`` line."""
        conn, response = self._send("GET", f"/v1/runs/{run_id}/events", timeout=idle_timeout)
        try:
            if response.status >= 400:
                raw = response.read()
                raise _error(response.status, json.loads(raw) if raw.strip() else None)
            while True:
                try:
                    line = response.readline()
                except OSError as exc:
                    raise DaemonError(f"lost the daemon's event stream: {exc}") from exc
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def _error(status: int, data: Any) -> Exception:
    message = data.get("error") if isinstance(data, dict) else None
    text = str(message or data or f"HTTP {status}")
    if status == 404:
        return UnknownRunError(text)
    if status in (400, 409, 422):
        return UsageError(text)
    return DaemonError(f"daemon answered {status}: {text}")


def daemon_client(config: Config, timeout: float = 30.0) -> tuple[int, ApiClient] | None:
    """``(pid, client)`` for the daemon running on ``config``'s state dir, or ``None``."""
    return daemon_client_at(config.state_dir, socket_path(config), timeout)


def daemon_client_at(
    state_dir: Path, socket: Path, timeout: float = 30.0
) -> tuple[int, ApiClient] | None:
    """:func:`daemon_client` from the state dir and the API socket's path (``schedctl status``
    has them from the config's view, without the full config)."""
    pid = StateLock.holder(state_dir)
    if pid is None or not socket.exists():
        return None
    return pid, ApiClient(unix=socket, timeout=timeout)
