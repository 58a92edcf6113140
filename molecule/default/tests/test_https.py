"""The app through nginx: HTTPS, HTTP/2, redirects, headers, WebSocket, proxy scheme."""

from __future__ import annotations

import gzip
import json
import ssl
from typing import Any

import httpx
import pytest

from asgikit_testing.clients import https_client, tls_context, wss_connect
from asgikit_testing.forwarding import SET_BY_THE_EDGE, SPOOFED, spoofed_values_seen
from conftest import CERTIFICATE


def test_https_get_through_nginx_returns_the_app(https: httpx.Client) -> None:
    response = https.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["app"] == "refapp"
    assert body["version"] == "1.0.0"
    assert body["greeting"] == "hello from molecule"


def test_runtime_reports_uvloop_and_httptools(https: httpx.Client) -> None:
    body = https.get("/runtime").json()
    assert body["event_loop"] == "uvloop.Loop"
    assert body["http_protocol"] == "httptools"


def test_health_endpoints(https: httpx.Client) -> None:
    assert https.get("/healthz").json() == {"status": "ok"}
    ready = https.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "version": "1.0.0"}


def test_app_sees_https_scheme_and_client_address(https: httpx.Client, https_port: int) -> None:
    body = https.get("/request-info").json()
    assert body["scheme"] == "https"
    assert body["url"] == f"https://127.0.0.1:{https_port}/request-info"
    assert body["client"] not in (None, "", "127.0.0.1")  # the peer nginx saw, not the socket


def test_client_supplied_forwarded_for_is_replaced_by_nginx(https: httpx.Client) -> None:
    body = https.get("/request-info", headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert body["client"] != "203.0.113.9"


# Host headers that name a site name but carry more: nginx matches server_name on the name
# alone, and the app would build its URLs from the rest.
MALFORMED_HOSTS = ["127.0.0.1:@evil.example", "localhost:443@evil.example", "localhost:x", "localhost:1:2"]


@pytest.mark.parametrize("value", MALFORMED_HOSTS)
def test_malformed_host_is_refused_before_the_app(https: httpx.Client, value: str) -> None:
    response = https.get("/request-info", headers={"Host": value})
    assert response.status_code == 400, response.text
    assert "evil" not in response.text


def test_app_builds_its_urls_from_the_normalised_name_and_the_public_port(
    https: httpx.Client, https_port: int
) -> None:
    # A site name in capitals, with a port the client made up: the app gets the name as
    # nginx normalised it, with the public HTTPS port (the one published here).
    body = https.get("/request-info", headers={"Host": "LOCALHOST:1"}).json()
    assert body["host"] == f"localhost:{https_port}"
    assert body["url"] == f"https://localhost:{https_port}/request-info"
    assert body["forwarding"]["x-forwarded-host"] == f"localhost:{https_port}"


def test_client_sent_forwarding_headers_never_reach_the_app(https: httpx.Client) -> None:
    body = https.get("/request-info", headers=SPOOFED).json()
    forwarding = body["forwarding"]
    # Only what nginx sets itself, from the connection: never a value the client sent.
    assert set(forwarding) == SET_BY_THE_EDGE
    assert forwarding["x-forwarded-proto"] == "https"
    assert forwarding["x-forwarded-for"] == forwarding["x-real-ip"] == body["client"]
    assert spoofed_values_seen(forwarding) == []
    assert body["scheme"] == "https"


def test_upstream_connections_are_kept_alive_between_plain_requests(https: httpx.Client, host: Any) -> None:
    for _ in range(50):
        assert https.get("/healthz").status_code == 200
    # With keep-alive, idle connections from nginx stay open on the app's socket after the
    # requests are done; with "Connection: close" to the upstream, none would remain.
    idle = host.check_output("ss -xH state connected | grep -c /run/refapp/gunicorn.sock || true")
    assert int(idle) >= 1


def test_http_redirects_to_https_on_the_public_port_with_path_and_query(
    http_port: int, https_port: int
) -> None:
    response = httpx.get(f"http://127.0.0.1:{http_port}/some/path?x=1", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == f"https://127.0.0.1:{https_port}/some/path?x=1"


def test_http2_is_negotiated(https_port: int, tls: ssl.SSLContext) -> None:
    with https_client(https_port, tls, http2=True) as client:
        response = client.get("/healthz")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200


def test_security_headers_and_no_server_version(https: httpx.Client) -> None:
    headers = https.get("/healthz").headers
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["server"] == "nginx"


def test_security_headers_also_on_errors(https: httpx.Client) -> None:
    response = https.get("/no-such-page")
    assert response.status_code == 404
    assert "strict-transport-security" in response.headers


def test_large_payload_is_gzipped_through_nginx(https: httpx.Client) -> None:
    with https.stream("GET", "/large", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        compressed = b"".join(response.iter_raw())
    assert json.loads(gzip.decompress(compressed))["count"] == 500


def test_websocket_echo_over_wss_through_nginx(https_port: int, tls: ssl.SSLContext) -> None:
    with wss_connect(https_port, "/ws", tls) as ws:
        for message in ("hello", "x" * 100_000):
            ws.send(message)
            assert ws.recv(timeout=10) == message
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\xffbinary"


def test_unknown_host_gets_no_answer(https_port: int, tls: ssl.SSLContext, http_port: int) -> None:
    with https_client(https_port, tls) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/", headers={"Host": "unknown.example"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{http_port}/", headers={"Host": "unknown.example"})


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_accepted(host: Any, https_port: int, version: ssl.TLSVersion) -> None:
    context = tls_context(host.file(CERTIFICATE).content_string, minimum=version, maximum=version)
    with https_client(https_port, context) as client:
        assert client.get("/healthz").status_code == 200


def test_tls_1_1_is_refused(host: Any, https_port: int) -> None:
    # The host's own OpenSSL client, which can still offer TLS 1.1 at security level 0.
    probe = host.run(
        "openssl s_client -connect 127.0.0.1:443 -servername localhost -tls1_1 "
        "-cipher 'DEFAULT:@SECLEVEL=0' </dev/null"
    )
    assert probe.rc != 0
    assert "alert protocol version" in probe.stderr, probe.stderr
