"""The daemon's control API: server (:mod:`.server`), endpoints (:mod:`.routes`), client.

Names resolve on first use (PEP 562), so a client that only needs :func:`daemon_client` does
not import the server, its routes and their pydantic models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.api.address import socket_path
    from scheduler.api.client import ApiClient, daemon_client
    from scheduler.api.payloads import run_summary, status_payload
    from scheduler.api.server import ApiService, Auth, load_token

_WHERE = {
    "ApiClient": "scheduler.api.client",
    "ApiService": "scheduler.api.server",
    "Auth": "scheduler.api.server",
    "daemon_client": "scheduler.api.client",
    "load_token": "scheduler.api.server",
    "run_summary": "scheduler.api.payloads",
    "socket_path": "scheduler.api.address",
    "status_payload": "scheduler.api.payloads",
}

__all__ = [
    "ApiClient",
    "ApiService",
    "Auth",
    "daemon_client",
    "load_token",
    "run_summary",
    "socket_path",
    "status_payload",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
