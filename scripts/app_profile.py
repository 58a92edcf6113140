"""The app alone, in-process: the CPU time each endpoint takes per request through the ASGI
app, with and without Accept-Encoding: gzip, and what encoding and compressing a large
payload take by themselves. No server, no socket:
what is left of a request's cost once the app's share is known is the servers'.

    python -P app_profile.py MODULE:ATTRIBUTE PATH [PATH ...]

Run with the release's python, as the app user with its environment (scripts/bench.py does,
on the demo host); the standard library alone. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

BATCHES = 5
PER_BATCH = 200


def load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


async def call(asgi: Any, target: str, *, gzip_ok: bool = True) -> bytes:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost")] + ([(b"accept-encoding", b"gzip")] if gzip_ok else []),
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 443),
    }
    status: list[int] = []
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await asgi(scope, receive, send)
    if status != [200]:
        sys.exit(f"app_profile: GET {target} answered {status}")
    return b"".join(body)


def cpu_ms(work: Callable[[], None]) -> float:
    """The median, over batches, of the process's CPU time per call (threads included)."""
    work()
    results = []
    for _ in range(BATCHES):
        started = time.process_time()
        for _ in range(PER_BATCH):
            work()
        results.append((time.process_time() - started) * 1000 / PER_BATCH)
    return round(statistics.median(results), 3)


def requests_ms(loop: asyncio.AbstractEventLoop, asgi: Any, target: str, *, gzip_ok: bool) -> float:
    return cpu_ms(lambda: loop.run_until_complete(call(asgi, target, gzip_ok=gzip_ok)) and None)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    app = load(sys.argv[1])
    loop = asyncio.new_event_loop()
    report: dict[str, Any] = {}
    for target in sys.argv[2:]:
        report[target] = {
            "request": requests_ms(loop, app, target, gzip_ok=True),
            "request, no gzip": requests_ms(loop, app, target, gzip_ok=False),
        }
        body = loop.run_until_complete(call(app, target, gzip_ok=False))
        if len(body) > 4096:
            payload = json.loads(body)

            def render(payload: Any = payload) -> None:  # as Starlette's JSONResponse renders
                json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

            # Starlette's GZipMiddleware compresses at level 9 unless told otherwise.
            report[target] |= {
                "json.dumps": cpu_ms(render),
                "gzip level 9": cpu_ms(lambda body=body: gzip.compress(body, 9)),
                "gzip level 1": cpu_ms(lambda body=body: gzip.compress(body, 1)),
                "bytes": len(body),
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
