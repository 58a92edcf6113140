"""The kit's gunicorn worker (roles/gunicorn/files/etc/app/asgikit_worker.py) under a real
gunicorn, with the pinned uvicorn and uvicorn-worker, over a unix socket: what a retiring
worker does with a keep-alive connection that nginx holds idle. The stock worker is run the
same way, to show what the tests would catch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gunicorn_conf import rendered  # noqa: F401  (the rendered gunicorn_conf.py variants)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, unix_connect

STOCK_WORKER = "uvicorn_worker.UvicornWorker"


class Server:
    def __init__(self, process: subprocess.Popen[bytes], sock: Path) -> None:
        self.process = process
        self.sock = sock

    def connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(str(self.sock))
        return conn


def _serve(rendered: Path, tmp_path: Path, *extra: str) -> Iterator[Server]:  # noqa: F811
    sock = tmp_path / "app.sock"
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--config", str(rendered / "default.py"),
            "--bind", f"unix:{sock}", "--workers", "1", "--no-control-socket",
            "--graceful-timeout", "20", *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = Server(process, sock)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not answer within 20 s"
            try:
                with server.connect() as conn:
                    if request(conn, "GET", "/healthz", close=True)[0] == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def kit_server(rendered: Path, tmp_path: Path) -> Iterator[Server]:  # noqa: F811
    yield from _serve(rendered, tmp_path)


@pytest.fixture
def stock_server(rendered: Path, tmp_path: Path) -> Iterator[Server]:  # noqa: F811
    yield from _serve(rendered, tmp_path, "--worker-class", STOCK_WORKER)


def read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body. Raises ConnectionError when the
    connection closes before a whole response arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response ({data!r})")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response")
        body += chunk
    return int(status_line.split()[1]), headers, body


def request(
    conn: socket.socket, method: str, path: str, body: bytes = b"", *, close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    conn.sendall(head.encode() + body)
    return read_response(conn)


def retire_the_worker(conn: socket.socket) -> int:
    """Asks the worker serving `conn` for its pid (the connection stays open and idle), then
    sends it TERM, as gunicorn does to the old workers on a HUP. Returns the pid."""
    status, _, body = request(conn, "GET", "/runtime")
    assert status == 200
    pid = int(json.loads(body)["pid"])
    os.kill(pid, signal.SIGTERM)
    # Stock uvicorn closes idle connections 0.1 s into its shutdown; wait well past that.
    time.sleep(1.0)
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: gunicorn reaps it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1].split()[0] != "Z"


def test_a_request_on_an_idle_connection_of_a_retiring_worker_is_answered(kit_server: Server) -> None:
    with kit_server.connect() as conn:
        pid = retire_the_worker(conn)
        assert alive(pid), "the worker left while nginx could still use its idle connection"
        status, headers, body = request(conn, "POST", "/echo", b'{"n": 1}')
        assert status == 200
        assert body.startswith(b'{"echo":{"n":1}')
        assert headers["connection"] == "close"
        assert conn.recv(1) == b"", "the connection stays open after an answer that said close"
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the worker did not exit once its last connection was closed"


def test_a_retiring_worker_waits_for_the_peer_to_close_an_idle_connection(kit_server: Server) -> None:
    conn = kit_server.connect()
    pid = retire_the_worker(conn)
    time.sleep(1.0)
    assert alive(pid)
    conn.close()  # what nginx does after its upstream keepalive_timeout
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_the_stock_worker_closes_an_idle_connection_at_once(stock_server: Server) -> None:
    """The failure the kit's worker removes: a request sent on the idle connection of a
    retiring stock worker gets no answer (nginx would answer a POST with 502)."""
    with stock_server.connect() as conn:
        retire_the_worker(conn)
        with pytest.raises(ConnectionError):
            request(conn, "POST", "/echo", b'{"n": 1}')


def test_a_websocket_opened_on_a_retiring_worker_is_closed_with_1012(kit_server: Server) -> None:
    with kit_server.connect() as conn:
        retire_the_worker(conn)
        conn.sendall(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, rest = read_response(conn)
        assert status == 101
        frame = rest
        while len(frame) < 4:
            chunk = conn.recv(64)
            assert chunk, "closed without a close frame"
            frame += chunk
        opcode, code = frame[0] & 0x0F, int.from_bytes(frame[2:4], "big")
        assert (opcode, code) == (0x8, 1012)


def exchange_until_closed(websocket: ClientConnection) -> None:
    websocket.send("message 0")
    for n in range(1, 100_000):
        websocket.send(f"message {n}")
        assert websocket.recv(timeout=10) == f"message {n - 1}"


def test_an_open_websocket_is_closed_with_1012_through_the_closing_handshake(kit_server: Server) -> None:
    """The client keeps messages in flight while the worker retires (two sent for each
    echo read): the worker's close frame still arrives (1012), and the client's reply
    completes the handshake. (Over a bare unix socket stock uvicorn passes this too; its
    reset loses the close frame inside nginx, which molecule/default's reload tests see.)"""
    with unix_connect(str(kit_server.sock), "ws://app/ws") as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=10) == "hello"
        with kit_server.connect() as conn:
            status, _, body = request(conn, "GET", "/runtime", close=True)
        assert status == 200
        os.kill(int(json.loads(body)["pid"]), signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            exchange_until_closed(websocket)
    assert closed.value.rcvd is not None, "no close frame: the connection was cut"
    assert closed.value.rcvd.code == 1012
    assert closed.value.sent is not None, "the client's close reply was not sent"
