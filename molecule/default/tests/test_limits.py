"""Per-client limits and slow clients, at nginx on an app host with no balancer in front: a
flood of requests from one address gets 429 beyond its limit while another address is
served as before; slowloris connections are cut off after the header timeout."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

import pytest
import testinfra

from asgikit_testing.abuse import flood, get_from, slowloris
from asgikit_testing.clients import https_client, tls_context
from asgikit_testing.containers import published_port
from conftest import CERTIFICATE

# The flood lands on the Debian 13 host; the other client is the Debian 12 host, another
# address on the scenario's network.
TARGET, OTHER = "asgikit-debian13", "asgikit-debian12"
LIMIT = 256  # nginx_limit_connections_per_client's default
HEADER_TIMEOUT = 10  # nginx_client_header_timeout's default


def _scenario_host(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def host() -> Any:
    """nginx's limits are the same on both hosts: the Debian 13 host alone."""
    return _scenario_host(TARGET)


def _address(container: str) -> str:
    argv = ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_a_flood_from_one_address_gets_429_beyond_its_limit_and_another_address_is_served(host: Any) -> None:
    """Requests that take 15 s each, 100 more at once than one address may have in flight:
    those beyond the limit get 429 at once, the others are served, and a client at another
    address is served meanwhile, promptly."""
    port, target = published_port(TARGET, 443), _address(TARGET)
    outcome: dict[str, Any] = {}
    flooding = threading.Thread(target=lambda: outcome.update(flood(port, "/io?ms=15000", LIMIT + 100)))
    flooding.start()
    time.sleep(5.0)  # the flood's requests are in flight (each waits 15 s in the app)
    status, seconds = get_from(OTHER, f"https://{target}/healthz")
    assert flooding.is_alive(), "the flood ended before the other address was served"
    flooding.join(timeout=120)
    assert not flooding.is_alive(), "the flood did not finish"
    assert status == 200
    assert seconds < 2.0, f"the other address waited {seconds:.2f} s"
    assert outcome == {"200": LIMIT, "429": 100}, outcome


def test_slowloris_connections_are_cut_off_after_the_header_timeout_and_others_are_served(host: Any) -> None:
    port = published_port(TARGET, 443)
    context = tls_context(host.file(CERTIFICATE).content_string)
    results: list[float | None] = []
    slow = threading.Thread(target=lambda: results.extend(slowloris(port, 100, seconds=HEADER_TIMEOUT + 15)))
    slow.start()
    time.sleep(3.0)
    with https_client(port, context) as client:
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 2.0
    slow.join(timeout=120)
    assert len(results) == 100
    assert all(closed is not None for closed in results), results
    assert max(results) < HEADER_TIMEOUT + 5, results
    assert min(results) >= HEADER_TIMEOUT - 1, results
