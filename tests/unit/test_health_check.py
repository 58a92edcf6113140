"""The health gate's verdict (the gunicorn role's gunicorn_healthy), on real HTTP answers:
any status list, a version in a JSON field or a header, or no version at all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asgikit_testing.playbooks import operator_run

HERE = Path(__file__).resolve().parent
ANSWERS = {
    "/readyz": (200, {"X-App-Version": "2.0.0"}, b'{"status": "ready", "version": "2.0.0"}'),
    "/health": (200, {}, b"true"),
    "/starting": (503, {}, b'{"version": "2.0.0"}'),
    "/text": (200, {}, b"OK"),
}
CASES = [
    {"path": "/readyz", "codes": [200], "field": "version", "expected": "2.0.0", "healthy": True},
    {"path": "/readyz", "codes": [200], "field": "version", "expected": "1.0.0", "healthy": False},
    {"path": "/readyz", "codes": [200], "header": "X-App-Version", "expected": "2.0.0", "healthy": True},
    {"path": "/readyz", "codes": [200], "header": "X-App-Version", "expected": "1.0.0", "healthy": False},
    {"path": "/health", "codes": [200], "expected": "2.0.0", "healthy": True},
    {"path": "/health", "codes": [200], "field": "version", "expected": "2.0.0", "healthy": False},
    {"path": "/text", "codes": [200], "expected": "2.0.0", "healthy": True},
    {"path": "/starting", "codes": [200], "expected": "2.0.0", "healthy": False},
    {"path": "/starting", "codes": [200, 503], "field": "version", "expected": "2.0.0", "healthy": True},
    {"path": "/missing", "codes": [200], "expected": "2.0.0", "healthy": False},
]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, headers, body = ANSWERS.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if self.path == "/text" else "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_health_verdicts_follow_status_codes_and_the_reported_version(server: str) -> None:
    extra = json.dumps({"health_url": server, "cases": CASES})
    run = operator_run("ansible-playbook", str(HERE / "health_answers.yml"), "-e", extra, timeout=300)
    assert run.returncode == 0, run.output[-3000:]
    assert "ok=2" in run.output
