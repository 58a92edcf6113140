"""The reference app's behaviour, in-process and under a real uvicorn server."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from fastapi.testclient import TestClient
from websockets.sync.client import unix_connect

from conftest import uds_client
from refapp.main import GZIP_MINIMUM_SIZE


def test_healthz_reports_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_ready_with_version_after_startup(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["version"] == "1.0.0"


def test_readyz_is_503_before_startup() -> None:
    from refapp.main import app

    unstarted = TestClient(app)  # no context manager: lifespan never ran
    response = unstarted.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "starting"


def test_index_reads_greeting_from_environment(client: TestClient, monkeypatch) -> None:
    monkeypatch.setenv("REFAPP_GREETING", "from-env-file")
    assert client.get("/").json()["greeting"] == "from-env-file"


def test_large_payload_is_gzipped_when_accepted(client: TestClient) -> None:
    response = client.get("/large", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["count"] == 500


def test_large_payload_exceeds_gzip_threshold_uncompressed(client: TestClient) -> None:
    response = client.get("/large", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in response.headers
    assert len(response.content) > GZIP_MINIMUM_SIZE


def test_small_response_is_not_gzipped(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers


def test_websocket_echoes_text_and_bytes(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text("ping")
        assert ws.receive_text() == "ping"
        ws.send_bytes(b"\x00\x01binary")
        assert ws.receive_bytes() == b"\x00\x01binary"


def test_runtime_reports_uvloop_and_httptools_under_uvicorn(uvicorn_socket: Path) -> None:
    with uds_client(uvicorn_socket) as http:
        body = http.get("/runtime").json()
    assert body["event_loop"] == "uvloop.Loop"
    assert body["http_protocol"] == "httptools"
    assert isinstance(body["pid"], int)
    assert body["version"] == "1.0.0"


def test_runtime_tells_h11_and_asyncio_apart(uvicorn_h11_socket: Path) -> None:
    with uds_client(uvicorn_h11_socket) as http:
        body = http.get("/runtime").json()
    assert body["event_loop"] == "asyncio._UnixSelectorEventLoop"
    assert body["http_protocol"] == "h11"


def test_forwarded_proto_over_unix_socket_gives_https_scheme(uvicorn_socket: Path) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "Host": "example.test"}
    with uds_client(uvicorn_socket) as http:
        body = http.get("/request-info", headers=headers).json()
    assert body["scheme"] == "https"
    assert body["url"] == "https://example.test/request-info"
    assert body["client"] == "203.0.113.7"
    assert body["forwarding"] == {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"}


def test_without_forwarded_headers_scheme_is_http(uvicorn_socket: Path) -> None:
    with uds_client(uvicorn_socket) as http:
        assert http.get("/request-info").json()["scheme"] == "http"


def test_real_server_gzips_large_payload(uvicorn_socket: Path) -> None:
    with (
        uds_client(uvicorn_socket) as http,
        http.stream("GET", "/large", headers={"Accept-Encoding": "gzip"}) as raw,
    ):
        assert raw.headers["content-encoding"] == "gzip"
        compressed = b"".join(raw.iter_raw())
    assert json.loads(gzip.decompress(compressed))["count"] == 500


def test_real_websocket_client_echo_over_unix_socket(uvicorn_socket: Path) -> None:
    with unix_connect(str(uvicorn_socket), "ws://app/ws") as ws:
        for message in ("one", "two", "x" * 70_000):
            ws.send(message)
            assert ws.recv() == message


def test_echo_returns_the_posted_json(client: TestClient) -> None:
    response = client.post("/echo", json={"n": 1, "text": "hi"})
    assert response.status_code == 200
    assert response.json() == {"echo": {"n": 1, "text": "hi"}, "version": "1.0.0"}


def test_items_upsert_is_idempotent_and_patch_merges(client: TestClient) -> None:
    for _ in range(2):
        assert client.put("/items/k1", json={"a": 1}).json()["value"] == {"a": 1}
    assert client.patch("/items/k1", json={"b": 2}).json()["value"] == {"a": 1, "b": 2}
    assert client.get("/items/k1").json()["value"] == {"a": 1, "b": 2}
    for _ in range(2):
        response = client.delete("/items/k1")
        assert response.status_code == 200
        assert response.json()["value"] is None


def test_readyz_answers_head_without_a_body(client: TestClient) -> None:
    response = client.head("/readyz")
    assert response.status_code == 200
    assert response.content == b""


def test_io_awaits_the_time_asked_and_no_more_than_ten_seconds(client: TestClient) -> None:
    started = time.monotonic()
    assert client.get("/io", params={"ms": 50}).json() == {"waited_ms": 50}
    assert time.monotonic() - started >= 0.05
    assert client.get("/io").json() == {"waited_ms": 10}
    assert client.get("/io", params={"ms": -5}).json() == {"waited_ms": 0}


def test_io_bounds_the_wait(client: TestClient, monkeypatch) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("refapp.main.asyncio.sleep", no_wait)
    assert client.get("/io", params={"ms": 10**9}).json() == {"waited_ms": 10_000}
    assert waits == [10.0]


def test_cpu_burns_the_cpu_time_asked_and_no_more_than_100_ms(client: TestClient) -> None:
    assert 20 <= client.get("/cpu", params={"ms": 20}).json()["cpu_ms"] < 40
    assert 100 <= client.get("/cpu", params={"ms": 10**6}).json()["cpu_ms"] < 150
    assert client.get("/cpu").json()["cpu_ms"] >= 1
