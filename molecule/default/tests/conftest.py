"""Fixtures for the default scenario: where each container's nginx is published, the TLS
context that trusts its certificate, and a runner for site.yml against one host."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.clients import https_client, tls_context, wss_connect
from asgikit_testing.containers import inventory_name, published_port
from asgikit_testing.load import MIXED, BackgroundLoad
from asgikit_testing.playbooks import keep_output

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / "site.yml"

# The layout the roles' defaults produce for asgi_app_name "refapp".
APP = "refapp"
SERVICE = f"{APP}.service"
SOCKET_UNIT = f"{APP}.socket"
SOCKET_PATH = f"/run/{APP}/gunicorn.sock"
CURRENT = f"/opt/{APP}/current"
VENV = f"{CURRENT}/venv"
CONFIG_DIR = f"/etc/{APP}"
ENV_FILE = f"{CONFIG_DIR}/{APP}.env"
GUNICORN_CONF = f"{CONFIG_DIR}/gunicorn_conf.py"
KIT_WORKER = f"{CONFIG_DIR}/asgikit_worker.py"
CERTIFICATE = f"/etc/nginx/tls/{APP}.crt"
NGINX_SITE = f"/etc/nginx/sites-available/{APP}.conf"


@pytest.fixture
def container(host: Any) -> str:
    return inventory_name(host)


@pytest.fixture
def https_port(container: str) -> int:
    return published_port(container, 443)


@pytest.fixture
def http_port(container: str) -> int:
    return published_port(container, 80)


@pytest.fixture
def tls(host: Any) -> ssl.SSLContext:
    """Trusts exactly the host's certificate, which names 127.0.0.1: full verification."""
    return tls_context(host.file(CERTIFICATE).content_string)


@pytest.fixture
def https(https_port: int, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    with https_client(https_port, tls) as client:
        yield client


@pytest.fixture
def mixed_load(https_port: int, tls: ssl.SSLContext) -> Callable[..., BackgroundLoad]:
    """Makes the mixed load (every method, and WebSocket sessions) straight at this host,
    verified with its certificate; start it with `with`."""

    def make(threads: int = 6, websockets: int = 2, max_seconds: float = 300) -> BackgroundLoad:
        return BackgroundLoad(
            lambda: https_client(https_port, tls),
            MIXED,
            threads=threads,
            make_websocket=lambda: wss_connect(https_port, "/ws", tls),
            websockets=websockets,
            max_seconds=max_seconds,
        )

    return make


def run_site(
    container: str | None, *args: str, inventory: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs site.yml on one container (None: on every host), as a user would, and returns its output."""
    inventory = inventory or Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    limit = ["--limit", container] if container else []
    argv = ["ansible-playbook", "-i", str(inventory), str(SITE), *limit, *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    keep_output(argv, result.stdout + result.stderr)
    return result
