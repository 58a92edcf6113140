"""The load tool's WebSocket client against a real TLS WebSocket server on 127.0.0.1 that
closes every session with 1012 after a message or three, as retiring workers do."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from asgikit_testing.certificates import make_certificate
from asgikit_testing.clients import WebSocketSession, tls_context
from asgikit_testing.load import WEBSOCKET, BackgroundLoad

SESSIONS = 12


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, str]]:
    """A TLS WebSocket echo server in a thread of its own: a session on /N echoes N messages,
    then closes with 1012 (service restart). Yields its port and certificate."""

    async def echo_then_restart(connection: ServerConnection) -> None:
        assert connection.request is not None
        for _ in range(int(connection.request.path.lstrip("/"))):
            await connection.send(await connection.recv())
        await connection.close(1012, "service restart")

    ready = threading.Event()
    found: dict[str, object] = {}

    async def run(stop: asyncio.Event) -> None:
        async with serve(echo_then_restart, "127.0.0.1", 0, ssl=found["context"]) as listening:
            found["port"] = listening.sockets[0].getsockname()[1]
            found["loop"] = asyncio.get_running_loop()
            found["stop"] = stop
            ready.set()
            await stop.wait()

    with tempfile.TemporaryDirectory() as directory:
        cert, key, pem = make_certificate(Path(directory))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        found["context"] = context
        stop = asyncio.Event()
        thread = threading.Thread(target=asyncio.run, args=(run(stop),), daemon=True)
        thread.start()
        assert ready.wait(10), "the test server did not start"
        yield int(found["port"]), pem  # type: ignore[call-overload]
        found["loop"].call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)


def sessions_to(port: int, pem: str, *echoes: int) -> Callable[[], WebSocketSession]:
    """Sessions that the server closes after echoing `echoes` messages, in turn."""
    context, paths = tls_context(pem), itertools.cycle(f"/{n}" for n in echoes)
    return lambda: WebSocketSession(f"wss://127.0.0.1:{port}{next(paths)}", context, open_timeout=10)


def unused_client() -> httpx.Client:
    raise AssertionError("this load has no HTTP threads")


def test_a_session_echoes_and_reports_the_servers_close_code(server: tuple[int, str]) -> None:
    port, pem = server
    with sessions_to(port, pem, 1)() as session:
        session.send("hello")
        assert session.recv(timeout=10) == "hello"
        with pytest.raises(ConnectionClosed) as closed:
            session.recv(timeout=10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 1012


def test_many_sessions_in_threads_that_the_server_keeps_closing_lose_no_message(
    server: tuple[int, str],
) -> None:
    """Twelve threads open, use and drop TLS sessions until 1,000 messages were echoed.
    Every message is echoed (a 1012 close makes the load send it again on a new session),
    and every thread ends when told: none hangs on a socket another thread closed, which is
    what websockets' sync client did here within seconds."""
    port, pem = server
    make = sessions_to(port, pem, 1, 2, 3)
    load = BackgroundLoad(unused_client, threads=0, make_websocket=make, websockets=SESSIONS, max_seconds=60)
    with load:
        load.wait_for(1000, since=0.0, timeout=60)
    result = load.result
    assert load.running == 0, f"{load.running} of {SESSIONS} session threads did not end"
    assert result.failed == 0, result.summary()
    assert set(result.methods) == {WEBSOCKET}
    assert result.reconnected > 0, "no session was closed with 1012 while a message was on its way"
