"""HTTP and WebSocket endpoints of the reference app."""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.middleware.gzip import GZipMiddleware

from refapp.runtime import app_version, event_loop_class, http_protocol

GZIP_MINIMUM_SIZE = 1024


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.ready = True
    yield
    app.state.ready = False


app = FastAPI(title="refapp", version=app_version(), lifespan=lifespan)
app.state.ready = False
app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_SIZE)


@app.get("/")
async def index() -> dict[str, str]:
    return {
        "app": "refapp",
        "version": app_version(),
        "greeting": os.environ.get("REFAPP_GREETING", "hello"),
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the worker answers."""
    return {"status": "ok"}


# Endpoints that stand for the work a real app does per request (the benchmark's, and the
# tests' slow requests): bounded, so that no request can hold a worker for long.
MAX_IO_MS = 10_000
MAX_CPU_MS = 100


@app.get("/io")
async def io(ms: int = 10) -> dict[str, int]:
    """Awaits `ms` milliseconds (10 by default, 10 s at most), as an endpoint that waits on a
    database or another service does, then answers."""
    waited = max(0, min(ms, MAX_IO_MS))
    await asyncio.sleep(waited / 1000)
    return {"waited_ms": waited}


@app.get("/cpu")
def cpu(ms: float = 1.0) -> dict[str, float]:
    """Burns about `ms` milliseconds of CPU (1 by default, 100 at most) in a sync endpoint,
    which FastAPI runs in its thread pool; answers with the CPU time it took."""
    budget = max(0.0, min(ms, MAX_CPU_MS)) / 1000
    started, digest = time.thread_time(), b"refapp"
    while time.thread_time() - started < budget:
        digest = hashlib.sha256(digest).digest()
    return {"cpu_ms": round((time.thread_time() - started) * 1000, 3)}


@app.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(request: Request, response: Response) -> dict[str, str]:
    """Readiness: startup has finished, so the worker can take traffic."""
    if not request.app.state.ready:
        response.status_code = 503
        return {"status": "starting", "version": app_version()}
    return {"status": "ready", "version": app_version()}


@app.get("/runtime")
async def runtime() -> dict[str, Any]:
    """What serves this request: proves uvloop and httptools are in use."""
    return {
        "event_loop": event_loop_class(),
        "http_protocol": http_protocol(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "version": app_version(),
        "python": platform.python_version(),
    }


# Headers a proxy in front may set or must clear: whatever of them reaches the app.
FORWARDING_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-server",
    "x-url-scheme",
    "front-end-https",
    "x-original-host",
    "x-host",
    "x-real-ip",
)


@app.get("/request-info")
async def request_info(request: Request) -> dict[str, Any]:
    """The request as the app sees it, after the proxy headers were applied, and the
    forwarding headers that reached it."""
    return {
        "scheme": request.url.scheme,
        "url": str(request.url),
        "host": request.headers.get("host"),
        "client": request.client.host if request.client else None,
        "forwarding": {name: request.headers[name] for name in FORWARDING_HEADERS if name in request.headers},
        "request_id": request.headers.get("x-request-id"),
    }


@app.get("/large")
async def large(items: int = 500) -> dict[str, Any]:
    """A payload well above the gzip threshold, to exercise compression."""
    count = max(1, min(items, 10_000))
    return {
        "count": count,
        "items": [{"id": i, "name": f"item-{i}", "tags": ["alpha", "beta"]} for i in range(count)],
    }


# Endpoints for load of every method: an echo (POST) and an idempotent upsert (PUT, PATCH,
# DELETE, GET) of small JSON items, kept in the worker's memory. Each answer names the version.
ITEMS: dict[str, dict[str, Any]] = {}
MAX_ITEMS = 10_000


@app.post("/echo")
async def echo(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON body, back."""
    return {"echo": body, "version": app_version()}


def _item(key: str) -> dict[str, Any]:
    return {"key": key, "value": ITEMS.get(key), "version": app_version()}


@app.put("/items/{key}")
async def put_item(key: str, body: dict[str, Any]) -> dict[str, Any]:
    """Creates or replaces the item: sending it twice leaves the same state."""
    if key not in ITEMS and len(ITEMS) >= MAX_ITEMS:
        ITEMS.pop(next(iter(ITEMS)))
    ITEMS[key] = body
    return _item(key)


@app.patch("/items/{key}")
async def patch_item(key: str, body: dict[str, Any]) -> dict[str, Any]:
    """Merges the body's fields into the item (creating it)."""
    if key not in ITEMS and len(ITEMS) >= MAX_ITEMS:
        ITEMS.pop(next(iter(ITEMS)))
    ITEMS[key] = {**ITEMS.get(key, {}), **body}
    return _item(key)


@app.get("/items/{key}")
async def get_item(key: str) -> dict[str, Any]:
    return _item(key)


@app.delete("/items/{key}")
async def delete_item(key: str) -> dict[str, Any]:
    """Removes the item if it is there; 200 either way."""
    ITEMS.pop(key, None)
    return _item(key)


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket) -> None:
    """Echo every text or binary message back until the client closes."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return
