"""Real HTTP/1.1, HTTP/2, TLS and WebSocket clients pointed at 127.0.0.1 published ports
(or at the addresses of the tests' own containers)."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
from websockets.asyncio.client import connect

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
    server_name: str | None = None,
) -> httpx.Client:
    """A client for 127.0.0.1's published `port`, or for `address` (a test container's own).
    With `server_name`, it asks for that name as a browser would that resolved it to
    `address`: in the TLS handshake (SNI, and the certificate must name it) and in Host."""
    if server_name is None:
        return httpx.Client(
            base_url=f"https://{address}:{port}", verify=context, http2=http2, timeout=timeout
        )

    def name_the_server(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = server_name

    return httpx.Client(
        base_url=f"https://{address}:{port}",
        verify=context,
        http2=http2,
        timeout=timeout,
        headers={"Host": server_name if port == 443 else f"{server_name}:{port}"},
        event_hooks={"request": [name_the_server]},
    )


class WebSocketSession:
    """A blocking WebSocket client whose reads and writes all happen in the calling thread:
    websockets' asyncio client, on an event loop of the session's own that runs only within
    its calls.

    Not websockets' sync client: that one reads in a background thread while the caller
    writes, and either thread may close the socket while the other still uses its TLS object.
    OpenSSL keeps the raw descriptor number, so once another thread's new connection reuses
    that number, the stale object reads and writes that connection's bytes: both ends then
    see corrupted TLS records, or a WebSocket handshake whose answer never arrives. Under
    load with servers that close sessions (1012), the tests saw both."""

    def __init__(self, uri: str, context: ssl.SSLContext, open_timeout: float = CLIENT_TIMEOUT) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            opening = connect(uri, ssl=context, open_timeout=open_timeout)
            self._connection = self._loop.run_until_complete(opening)
        except BaseException:
            self._loop.close()
            raise

    def send(self, message: str | bytes) -> None:
        self._loop.run_until_complete(self._connection.send(message))

    def recv(self, timeout: float) -> str | bytes:
        """The next message; TimeoutError when none came within `timeout` seconds, and
        websockets' ConnectionClosed when the session ended (its close frame, if any, on it)."""
        return self._loop.run_until_complete(asyncio.wait_for(self._connection.recv(), timeout))

    def close(self) -> None:
        """The closing handshake (websockets' close timeout bounds it), then the loop is closed."""
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._connection.close())
        finally:
            self._loop.close()

    def __enter__(self) -> WebSocketSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def wss_connect(port: int, path: str, context: ssl.SSLContext) -> WebSocketSession:
    return WebSocketSession(f"wss://127.0.0.1:{port}{path}", context)


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


def websocket_for(container: str, path: str = "/ws") -> Callable[[], WebSocketSession]:
    """WebSocket sessions to a container's published 443, encrypted, not verified (as above)."""
    port, context = published_port(container, 443), _unverified()
    return lambda: wss_connect(port, path, context)
