"""Binding a stdlib HTTP server without the reverse DNS lookup ``HTTPServer.server_bind`` does."""

from __future__ import annotations

import socketserver
from http.server import HTTPServer


def bind_without_fqdn(server: HTTPServer) -> None:
    """Bind ``server`` and name it by the address it bound.

    ``HTTPServer.server_bind`` sets ``server_name`` from ``socket.getfqdn(host)``: a reverse
    DNS query at every start (seconds on a host whose resolver times out) and the ``idna``
    codec's modules, for a name nothing of schedctl's reads.
    """
    socketserver.TCPServer.server_bind(server)
    host, port = server.server_address[:2]
    server.server_name, server.server_port = str(host), int(port)
