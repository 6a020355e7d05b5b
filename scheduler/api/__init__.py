"""The daemon's control API: server (:mod:`.server`), endpoints (:mod:`.routes`), client."""

from scheduler.api.client import ApiClient, daemon_client
from scheduler.api.schema import run_summary, status_payload
from scheduler.api.server import ApiService, Auth, load_token, socket_path

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
