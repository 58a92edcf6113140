"""Fixtures: the app in-process, and the app under a real uvicorn on a unix socket."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from refapp.main import app

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _serve(socket_path: Path, *extra: str) -> Iterator[Path]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "uvicorn", "refapp.main:app", "--uds", str(socket_path), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if socket_path.exists():
                try:
                    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as probe:
                        if probe.get("http://app/healthz").status_code == 200:
                            break
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError("uvicorn did not answer within 15 s")
        yield socket_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def uvicorn_socket(tmp_path: Path) -> Iterator[Path]:
    """uvicorn with uvloop and httptools, trusting forwarded headers as the kit configures it."""
    yield from _serve(
        tmp_path / "app.sock", "--loop", "uvloop", "--http", "httptools", "--forwarded-allow-ips", "*"
    )


@pytest.fixture
def uvicorn_h11_socket(tmp_path: Path) -> Iterator[Path]:
    """uvicorn with the pure-Python stack, to show the introspection tells them apart."""
    yield from _serve(tmp_path / "h11.sock", "--loop", "asyncio", "--http", "h11")


def uds_client(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://app")
