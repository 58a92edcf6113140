"""Real HTTP/1.1, HTTP/2, TLS and WebSocket clients pointed at 127.0.0.1 published ports
(or at the addresses of the tests' own containers)."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.sync.client import ClientConnection, connect

from asgikit_testing.containers import published_port

# Seconds a client waits for an answer: an HTTP request (client_for) or a WebSocket
# handshake alike. A service that recovers from a crash (a master killed: the old workers
# drain, systemd restarts the service, the new workers import the app) answers late, not never.
CLIENT_TIMEOUT = 30


def tls_context(
    ca_pem: str, minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A context that verifies the server against `ca_pem` (the host's own certificate)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
        handle.write(ca_pem)
    context = ssl.create_default_context(cafile=handle.name)
    Path(handle.name).unlink()
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def https_client(
    port: int,
    context: ssl.SSLContext,
    *,
    http2: bool = False,
    timeout: float = 10.0,
    address: str = "127.0.0.1",
) -> httpx.Client:
    """A client for 127.0.0.1's published `port`, or for `address` (a test container's own)."""
    return httpx.Client(base_url=f"https://{address}:{port}", verify=context, http2=http2, timeout=timeout)


def wss_connect(port: int, path: str, context: ssl.SSLContext) -> ClientConnection:
    return connect(f"wss://127.0.0.1:{port}{path}", ssl=context, open_timeout=CLIENT_TIMEOUT)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def client_for(container: str) -> Callable[[], httpx.Client]:
    """Clients for a container's published 443 that encrypt but do not verify: the hosts'
    certificates are self-signed and differ per host (verification is tested in the default
    scenario); here only the traffic matters."""
    port, context = published_port(container, 443), _unverified()
    return lambda: httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=CLIENT_TIMEOUT)


def websocket_for(container: str, path: str = "/ws") -> Callable[[], ClientConnection]:
    """WebSocket sessions to a container's published 443, encrypted, not verified (as above)."""
    port, context = published_port(container, 443), _unverified()
    return lambda: wss_connect(port, path, context)
