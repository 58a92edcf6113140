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
import threading
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


def _serve(
    rendered: Path,  # noqa: F811
    tmp_path: Path,
    *extra: str,
    config: Path | None = None,
) -> Iterator[Server]:
    """gunicorn with the rendered default gunicorn_conf.py (or `config`), one worker unless
    `extra` says otherwise, serving once it answers."""
    sock = tmp_path / "app.sock"
    environ = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--config", str(config or rendered / "default.py"),
            "--bind", f"unix:{sock}", "--workers", "1", "--no-control-socket",
            "--graceful-timeout", "20", *extra,
        ],
        env=environ,
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


def a_worker_pid(server: Server) -> int:
    """The pid of the worker that answers a request on a new connection."""
    with server.connect() as conn:
        status, _, body = request(conn, "GET", "/runtime", close=True)
    assert status == 200
    return int(json.loads(body)["pid"])


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


def test_a_worker_past_max_requests_is_replaced_at_once_not_when_it_leaves(
    rendered: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A worker past max_requests waits, as it retires, for nginx to let go of its idle
    connections (up to nginx's upstream keepalive_timeout). gunicorn would start its
    replacement only once it has left; with every worker retiring at once (they reach
    max_requests together under a heavy load), nothing would accept meanwhile. The master
    starts the replacement as soon as the worker starts retiring."""
    for server in _serve(rendered, tmp_path, "--max-requests", "5", "--max-requests-jitter", "0"):
        with server.connect() as idle:
            status, _, body = request(idle, "GET", "/runtime")  # nginx's connection, kept idle
            assert status == 200
            retiring = int(json.loads(body)["pid"])
            for _ in range(5):
                with server.connect() as conn:
                    request(conn, "GET", "/healthz", close=True)
            time.sleep(0.5)  # uvicorn looks at its request count every 0.1 s
            with server.connect() as conn:
                conn.settimeout(5)
                started = time.monotonic()
                status, _, body = request(conn, "GET", "/runtime", close=True)
                waited = time.monotonic() - started
            assert status == 200
            assert int(json.loads(body)["pid"]) != retiring
            assert alive(retiring), "the retiring worker left: the test proves nothing"
            print(f"\nanswered by the replacement after {waited:.2f} s, the retiring worker still there")
            assert waited < 3, f"the request waited {waited:.2f} s"


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
        os.kill(a_worker_pid(kit_server), signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            exchange_until_closed(websocket)
    assert closed.value.rcvd is not None, "no close frame: the connection was cut"
    assert closed.value.rcvd.code == 1012
    assert closed.value.sent is not None, "the client's close reply was not sent"


# An app that takes this long to import, as large apps do: a HUP's new workers take at least
# that long to serve.
IMPORT_SECONDS = 3.0
SLOW_APP = f"""
import os
import time

time.sleep({IMPORT_SECONDS})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({{"type": message["type"] + ".complete"}})
            if message["type"] == "lifespan.shutdown":
                return
    body = str(os.getpid()).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""


def longest_wait_through_a_hup(rendered: Path, tmp_path: Path, config: Path | None, label: str) -> float:  # noqa: F811
    """Serves SLOW_APP with two workers, sends the master HUP under a steady stream of
    requests (a new connection each), from the HUP until the new workers have answered for a
    second, prints and returns the longest wait for an answer."""
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    extra = ("--workers", "2", "--pythonpath", str(tmp_path), "slowapp:app")
    answers: list[tuple[float, int]] = []
    for server in _serve(rendered, tmp_path, *extra, config=config):
        with server.connect() as conn:
            old = {int(request(conn, "GET", "/", close=True)[2])}
        server.process.send_signal(signal.SIGHUP)
        deadline, new_since = time.monotonic() + 30, None
        while time.monotonic() < deadline and (new_since is None or time.monotonic() - new_since < 1.0):
            started = time.monotonic()
            with server.connect() as conn:
                conn.settimeout(30)
                status, _, body = request(conn, "GET", "/", close=True)
            assert status == 200
            answers.append((time.monotonic() - started, int(body)))
            if int(body) not in old and new_since is None:
                new_since = time.monotonic()
            time.sleep(0.02)
        assert new_since is not None, "no new worker answered within 30 s of the HUP"
    longest = max(wait for wait, _ in answers)
    print(f"{label}: {len(answers)} requests through a HUP, longest wait {longest:.3f} s")
    return longest


def test_a_hup_retires_the_old_workers_only_once_the_new_ones_serve(rendered: Path, tmp_path: Path) -> None:  # noqa: F811
    """With the kit's gunicorn_conf.py, the old workers keep accepting until the new ones have
    imported the app: no request waits for an import."""
    longest = longest_wait_through_a_hup(rendered, tmp_path, None, "kit")
    assert longest < IMPORT_SECONDS / 2, f"a request waited {longest:.2f} s during the HUP"


def test_the_stock_hup_makes_requests_wait_for_the_new_workers_import(rendered: Path, tmp_path: Path) -> None:  # noqa: F811
    """What the test above would catch: gunicorn alone signals the old workers as soon as it
    has forked the new ones, and requests wait in the backlog until one of those serves."""
    stock = tmp_path / "stock.py"
    stock.write_text('worker_class = "uvicorn_worker.UvicornWorker"\n')
    longest = longest_wait_through_a_hup(rendered, tmp_path, stock, "stock")
    assert longest > IMPORT_SECONDS / 2, f"the longest wait was {longest:.2f} s"


def test_websockets_opened_while_the_worker_retires_are_closed_with_1012_never_cut(
    rendered: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """WebSocket handshakes sent in a burst as the worker gets TERM: whichever the retiring
    worker took (before, during or just as it stopped accepting) are closed with 1012; none
    is cut without a close frame when its graceful timeout ends. Those the replacement
    worker took stay open."""
    results: list[str] = []

    def session(sock: Path) -> None:
        try:
            with unix_connect(str(sock), "ws://app/ws", open_timeout=10) as websocket:
                websocket.send("hello")
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    websocket.recv(timeout=deadline - time.monotonic())
                results.append("open")
        except TimeoutError:
            results.append("open")
        except ConnectionClosed as closed:
            results.append(str(closed.rcvd.code) if closed.rcvd is not None else "cut")

    for server in _serve(rendered, tmp_path, "--graceful-timeout", "4"):
        pid = a_worker_pid(server)
        threads = [threading.Thread(target=session, args=(server.sock,)) for _ in range(40)]
        for number, thread in enumerate(threads):
            thread.start()
            if number == 20:
                os.kill(pid, signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
    print(f"sessions: {sorted(results)}")
    assert len(results) == len(threads)
    assert "cut" not in results, results
    assert set(results) <= {"1012", "open"}, results
