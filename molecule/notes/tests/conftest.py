"""Fixtures for the notes scenario: the app hosts, the balancer's published port, a client
through it, and a runner for the kit's playbooks against the scenario's inventory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.clients import client_for
from asgikit_testing.containers import scenario_hosts
from asgikit_testing.playbooks import Run, scenario_run

REPO = Path(__file__).resolve().parents[3]
BALANCER = "asgikit-notes-lb"
APP_HOSTS = ("asgikit-notes1", "asgikit-notes2")
CURRENT = "/opt/notes/current"
SECRETS = ("notes-db-canary-7f3a", "notes-app-secret-canary")

# Every test module runs once, against the balancer; app hosts come from `app_hosts`.
testinfra_hosts = [f"ansible://{BALANCER}"]


@pytest.fixture(scope="session")
def app_hosts() -> dict[str, Any]:
    return scenario_hosts(*APP_HOSTS)


def run_playbook(name: str, *args: str) -> Run:
    """Runs playbooks/<name>.yml against the scenario's inventory, as an operator would."""
    return scenario_run(name, *args)


@pytest.fixture(scope="module")
def through_balancer() -> Callable[[], httpx.Client]:
    return client_for(BALANCER)
