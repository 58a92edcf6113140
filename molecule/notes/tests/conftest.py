"""Fixtures for the notes scenario: the app hosts, the balancer's published port, a client
through it, and a runner for the kit's playbooks against the scenario's inventory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from asgikit_testing.clients import client_for
from asgikit_testing.playbooks import Run, scenario_run

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


def run_playbook(name: str, *args: str) -> Run:
    """Runs playbooks/<name>.yml against the scenario's inventory, as an operator would."""
    return scenario_run(name, *args)


@pytest.fixture(scope="module")
def through_balancer() -> Callable[[], httpx.Client]:
    return client_for(BALANCER)
