"""A small Docker Engine API client over the engine's unix socket: standard library only.

:mod:`runners.docker_prewarm` creates and starts a run's container while ``schedctl run`` is
still importing (the docker SDK and ``requests`` alone take ~145 ms to import), so it talks to
the engine with HTTP/1.1 on an ``AF_UNIX`` socket. It has only the calls the prewarm
makes, and the runner's before "go": create, start, attach to stdin (a hijacked connection),
rename, inspect, list, image id, remove. Plain sockets, not ``http.client`` (its ``email``
imports cost more than these few calls).

Every failure is translated here, at this module's one boundary (:func:`_engine_errors`), into
the project's errors: :class:`EngineDown` when the engine cannot be reached,
:class:`ImageMissing` for an image the engine does not have, :class:`InfraError` otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from scheduler.kernel.errors import EngineDown, ImageMissing, InfraError

DEFAULT_SOCKET_PATH = "/var/run/docker.sock"
BYTE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def socket_path_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The engine's unix socket as the SDK's ``from_env()`` finds it; ``None`` when
    ``DOCKER_HOST`` names anything but a unix socket (TCP/TLS: this client does not speak it)."""
    host = (os.environ if env is None else env).get("DOCKER_HOST") or ""
    if not host:
        return DEFAULT_SOCKET_PATH
    if host.startswith("unix://"):
        return host[len("unix://") :] or DEFAULT_SOCKET_PATH
    return None


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(value: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (``urllib.parse`` would
    import ``ipaddress`` and more for this)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def parse_bytes(value: str | int) -> int:
    """``"1g"`` -> bytes, as the docker SDK's ``parse_bytes`` reads ``mem_limit``/``shm_size``."""
    if isinstance(value, int):
        return value
    text = value
    if len(text) >= 2 and text[-2].isalpha() and text[-1] in "bB":
        text = text[:-1]
    if not text:
        return 0
    suffix = text[-1].lower()
    digits = text if suffix.isdigit() else text[:-1]
    if not suffix.isdigit() and suffix not in BYTE_UNITS:
        raise ValueError(f"{value!r} should end in one of b, k, m, g")
    return int(float(digits) * BYTE_UNITS["b" if suffix.isdigit() else suffix])


def _dechunk(body: bytes) -> bytes:
    """The payload of a ``Transfer-Encoding: chunked`` body.

    Raises:
        ValueError: it is not one.
    """
    out = bytearray()
    rest = body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            raise ValueError("truncated chunked body")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]


def _parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one whole HTTP/1.1 response.

    Raises:
        ValueError: it is not one.
    """
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no HTTP response from the engine: {raw[:80]!r}")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return int(parts[1]), headers, body


class _Unreachable(Exception):
    """The engine's socket could not be connected to (raised and translated in this module)."""


@contextlib.contextmanager
def _engine_errors(address: str) -> Iterator[None]:
    """The one boundary: socket, HTTP and JSON failures become the project's errors."""
    try:
        yield
    except InfraError:
        raise
    except _Unreachable as exc:
        raise EngineDown(f"docker engine not answering at {address}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise InfraError(f"docker: {exc}") from exc


class EngineClient:
    """The Engine API calls of a prewarmed container; one short connection per call."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET_PATH, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise _Unreachable(str(exc)) from exc
        return sock

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One request on its own connection (``Connection: close``: the response ends at EOF).
        Plain sockets rather than ``http.client``, whose import (``email``) costs more than
        the few calls made here."""
        with _engine_errors(self.address):
            data = json.dumps(body).encode() if body is not None else b""
            head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            if body is not None:
                head += "Content-Type: application/json\r\n"
            head += f"Content-Length: {len(data)}\r\n\r\n"
            sock = self._connect()
            try:
                sock.sendall(head.encode() + data)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            finally:
                sock.close()
            status, headers, raw = _parse_response(b"".join(chunks))
            json_body = "json" in headers.get("content-type", "")
            payload: Any = json.loads(raw) if json_body and raw.strip() else raw
            if status >= 400:
                message = str(
                    payload.get("message")
                    if isinstance(payload, dict)
                    else raw[:200].decode("utf-8", "replace")
                )
                if status == 404 and "image" in message.lower():
                    raise ImageMissing(f"docker: {message}")
                raise InfraError(f"docker: {method} {path}: {status} {message}")
            return status, payload

    def ping(self) -> bool:
        status, _ = self._request("GET", "/_ping")
        return status == 200

    def create(self, body: Mapping[str, Any], name: str) -> str:
        _, payload = self._request("POST", f"/containers/create?name={quote(name)}", body)
        return str(payload["Id"])

    def start(self, container_id: str) -> None:
        self._request("POST", f"/containers/{quote(container_id)}/start")

    def rename(self, container_id: str, name: str) -> None:
        self._request("POST", f"/containers/{quote(container_id)}/rename?name={quote(name)}")

    def inspect(self, container_id: str) -> dict[str, Any]:
        _, payload = self._request("GET", f"/containers/{quote(container_id)}/json")
        return dict(payload)

    def find(self, container: str) -> dict[str, Any] | None:
        """The inspection of a container (id or name); ``None`` when there is none."""
        try:
            return self.inspect(container)
        except InfraError as exc:
            if " 404 " in str(exc):
                return None
            raise

    def containers(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every container (running or not) with all of ``labels`` (``key`` or ``key=value``)."""
        filters = quote(json.dumps({"label": labels}))
        _, payload = self._request("GET", f"/containers/json?all=1&filters={filters}")
        return [dict(c) for c in payload] if isinstance(payload, list) else []

    def image_id(self, name: str) -> str:
        """The id of the local image ``name``. Raises :class:`ImageMissing` when it is not here."""
        _, payload = self._request("GET", f"/images/{quote(name)}/json")
        return str(payload["Id"])

    def remove(self, container_id: str) -> None:
        """Force-remove (kills it first) with its anonymous volumes; gone already is fine."""
        try:
            self._request("DELETE", f"/containers/{quote(container_id)}?force=1&v=1")
        except ImageMissing:
            return
        except InfraError as exc:
            if " 404 " not in str(exc):
                raise

    def attach_stdin(self, container_id: str) -> socket.socket:
        """A hijacked connection to the container's stdin. With ``StdinOnce`` the container's
        stdin is closed when this connection is (half-)closed -- also when this process dies."""
        with _engine_errors(self.address):
            sock = self._connect()
            try:
                request = (
                    f"POST /containers/{quote(container_id)}/attach?stream=1&stdin=1 HTTP/1.1\r\n"
                    "Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                    "Content-Length: 0\r\n\r\n"
                )
                sock.sendall(request.encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise InfraError("docker: the engine closed the attach connection")
                    head += chunk
                status = head.split(b"\r\n", 1)[0].split()
                if len(status) < 2 or status[1] not in (b"101", b"200"):
                    raise InfraError(f"docker: attach refused: {head[:200]!r}")
            except BaseException:
                sock.close()
                raise
            sock.settimeout(None)
            return sock


def create_body(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The Engine API body of ``containers.create(**kwargs)`` for the keyword arguments
    :meth:`runners.docker.DockerRunner.create_kwargs` uses (no GPUs), as the SDK builds it."""
    known = {
        "image", "command", "name", "labels", "environment", "working_dir", "user", "mounts",
        "tmpfs", "init", "privileged", "cap_drop", "security_opt", "read_only", "network_mode",
        "pids_limit", "mem_limit", "memswap_limit", "shm_size", "stdin_open",
    }  # fmt: skip
    unknown = set(kwargs) - known
    if unknown:
        raise ValueError(f"no Engine API mapping for {sorted(unknown)}")
    host: dict[str, Any] = {"NetworkMode": kwargs.get("network_mode") or "default"}
    if kwargs.get("mounts") is not None:
        host["Mounts"] = [dict(mount) for mount in kwargs["mounts"]]
    if kwargs.get("tmpfs"):
        host["Tmpfs"] = dict(kwargs["tmpfs"])
    if kwargs.get("init") is not None:
        host["Init"] = kwargs["init"]
    if kwargs.get("privileged"):
        host["Privileged"] = True
    if kwargs.get("cap_drop"):
        host["CapDrop"] = list(kwargs["cap_drop"])
    if kwargs.get("security_opt") is not None:
        host["SecurityOpt"] = list(kwargs["security_opt"])
    if kwargs.get("read_only") is not None:
        host["ReadonlyRootfs"] = kwargs["read_only"]
    if kwargs.get("pids_limit"):
        host["PidsLimit"] = kwargs["pids_limit"]
    for key, field in (("mem_limit", "Memory"), ("memswap_limit", "MemorySwap")):
        if kwargs.get(key) is not None:
            host[field] = parse_bytes(kwargs[key])
    if kwargs.get("shm_size") is not None:
        host["ShmSize"] = parse_bytes(kwargs["shm_size"])
    stdin = bool(kwargs.get("stdin_open"))
    body: dict[str, Any] = {
        "Image": kwargs["image"],
        "Cmd": list(kwargs["command"]),
        "Labels": dict(kwargs.get("labels") or {}),
        "Env": [f"{k}={v}" for k, v in (kwargs.get("environment") or {}).items()],
        "WorkingDir": kwargs.get("working_dir"),
        "User": kwargs.get("user"),
        "Tty": False,
        "OpenStdin": stdin,
        "StdinOnce": stdin,
        "AttachStdin": stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": host,
    }
    return body
