"""Clients that misbehave on purpose, for the per-client limits' tests: a flood of slow
requests from one address, and slowloris connections that send their headers a line at a
time. Each is bounded in count and time, and addresses 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _flood(port: int, path: str, requests: int, timeout: float) -> Counter[str]:
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}", verify=_unverified(), limits=limits, timeout=timeout
    ) as client:

        async def one() -> str:
            try:
                named = {"sni_hostname": "localhost"}
                response = await client.get(path, headers={"Host": "localhost"}, extensions=named)
                return str(response.status_code)
            except httpx.HTTPError as error:
                return type(error).__name__

        return Counter(await asyncio.gather(*(one() for _ in range(requests))))


def flood(port: int, path: str, requests: int, timeout: float = 60) -> Counter[str]:
    """`requests` GETs of `path` at once, each on a connection of its own, from this one
    address; what each ended with: its status, or the name of the transport error."""
    return asyncio.run(_flood(port, path, requests, timeout))


def _slowloris(port: int, seconds: float) -> float | None:
    """One connection that sends a request line, then a header line every second, never the
    end of the headers; the seconds until the server closed it, or None if it had not
    within `seconds`."""
    started = time.monotonic()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _unverified().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        tls.settimeout(1)
        while time.monotonic() - started < seconds:
            try:
                if not tls.recv(4096):
                    return time.monotonic() - started
            except TimeoutError:
                try:
                    tls.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
    return None


def slowloris(port: int, connections: int, seconds: float) -> list[float | None]:
    """`connections` slowloris connections at once; each one's `_slowloris` result."""
    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(lambda _: _slowloris(port, seconds), range(connections)))


PROBE = """
import ssl, sys, time, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Host": "localhost"})
started = time.monotonic()
answer = urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=20)
print(answer.status, time.monotonic() - started)
"""


def get_from(container: str, url: str) -> tuple[int, float]:
    """One GET of `url` from inside `container` (another address than this machine's, on the
    project's own network), straight through docker exec: its status and the seconds it took."""
    argv = ["docker", "exec", container, "python3", "-c", PROBE, url]
    status, seconds = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return int(status), float(seconds)
