"""Fixtures for the notes scenario: the app hosts, the balancer's published port, a client
through it, and a runner for the kit's playbooks against the scenario's inventory."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from asgikit_testing.containers import published_port

REPO = Path(__file__).resolve().parents[3]
BALANCER = "asgikit-notes-lb"
APP_HOSTS = ("asgikit-notes1", "asgikit-notes2")
CURRENT = "/opt/notes/current"
SECRETS = ("notes-db-canary-7f3a", "notes-app-secret-canary")

# Every test module runs once, against the balancer; app hosts come from `app_hosts`.
testinfra_hosts = [f"ansible://{BALANCER}"]


def inventory() -> Path:
    return Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent


@pytest.fixture(scope="session")
def app_hosts() -> dict[str, Any]:
    return {
        name: testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory()))
        for name in APP_HOSTS
    }


@dataclass
class Playbook:
    returncode: int
    output: str


def run_playbook(name: str, *args: str) -> Playbook:
    """Runs playbooks/<name>.yml against the scenario's inventory, as an operator would."""
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory()), str(REPO / "playbooks" / f"{name}.yml"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    return Playbook(result.returncode, result.stdout + result.stderr)


def client_for(container: str) -> Callable[[], httpx.Client]:
    """Clients for a container's published 443; the certificates are self-signed per host
    (verified in the default scenario), only the traffic matters here."""
    port = published_port(container, 443)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return lambda: httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=30)


@pytest.fixture(scope="module")
def through_balancer() -> Callable[[], httpx.Client]:
    return client_for(BALANCER)
