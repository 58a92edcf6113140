"""What the balancer lets through to the app hosts and the app: one well-formed Host, the
site's name normalised, no forwarding header a client wrote; and whom it trusts behind it:
each app host by its own name, so no app host can pass for another."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from asgikit_testing.abuse import flood, get_from, slowloris
from asgikit_testing.containers import published_port
from asgikit_testing.forwarding import SET_BY_THE_EDGE, SPOOFED, spoofed_values_seen
from asgikit_testing.playbooks import scenario_inventory, scenario_run
from conftest import APP_HOSTS, BALANCER, balancer_servers, testinfra_hosts

__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module

CERTIFICATE = "/etc/nginx/tls/refapp.crt"
HAPROXY_CONFIG = "/etc/haproxy/haproxy.cfg"
NETWORK = "asgikit-cluster"
KEY = "/etc/nginx/tls/refapp.key"


@pytest.mark.parametrize("value", ["localhost:@evil.example", "127.0.0.1:443@evil.example", "localhost:x"])
def test_the_balancer_refuses_a_malformed_host(
    through_balancer: Callable[[], httpx.Client], value: str
) -> None:
    with through_balancer() as client:
        response = client.get("/request-info", headers={"Host": value})
    assert response.status_code == 400, response.text
    assert "evil" not in response.text


def test_the_app_gets_the_normalised_name_and_no_forwarding_header_a_client_wrote(
    through_balancer: Callable[[], httpx.Client],
) -> None:
    sent = {"Host": "LOCALHOST:1", **SPOOFED}
    with through_balancer() as client:
        body = client.get("/request-info", headers=sent).json()
    # The public HTTPS port here is 443 (the balancer's and the app hosts' alike).
    assert body["host"] == "localhost"
    assert body["url"] == "https://localhost/request-info"
    forwarding = body["forwarding"]
    assert set(forwarding) == SET_BY_THE_EDGE
    assert forwarding["x-forwarded-host"] == "localhost"
    assert forwarding["x-forwarded-proto"] == "https"
    assert spoofed_values_seen(forwarding) == []


def _docker_inspect(*argv: str) -> str:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=True).stdout.strip()


def test_the_app_behind_the_balancer_sees_the_clients_address(
    through_balancer: Callable[[], httpx.Client],
) -> None:
    """The app hosts' nginx takes the client's address from the balancer's X-Forwarded-For
    (it trusts the balancer alone): the app sees this machine's address on the cluster's
    network, where Docker's published port comes from, never the balancer's nor one the
    client wrote."""
    gateway = _docker_inspect(
        "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", NETWORK
    )
    balancer = _docker_inspect(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", BALANCER
    )
    with through_balancer() as client:
        body = client.get("/request-info", headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert body["client"] == gateway, (body, gateway, balancer)
    assert body["forwarding"]["x-real-ip"] == gateway


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def test_the_balancer_makes_each_requests_id_and_the_app_host_keeps_it(
    through_balancer: Callable[[], httpx.Client], app_hosts: dict[str, Any]
) -> None:
    with through_balancer() as client:
        response = client.get("/request-info", headers={"X-Request-ID": "client-made"})
    request_id = response.headers["x-request-id"]
    assert UUID.match(request_id), request_id
    assert response.json()["request_id"] == request_id
    # One app host served it, and its access log has the balancer's id (nginx writes every second).
    time.sleep(1.5)
    logged = {
        name: app.run(f'grep -F \'"request_id":"{request_id}"\' /var/log/nginx/refapp.access.log').stdout
        for name, app in app_hosts.items()
    }
    assert sum(bool(lines) for lines in logged.values()) == 1, logged


def _wait_for_status(balancer: Any, name: str, wanted: str, seconds: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + seconds
    while (row := balancer_servers(balancer)[name])["status"] != wanted:
        assert time.monotonic() < deadline, f"{name} is not {wanted} after {seconds} s: {row}"
        time.sleep(0.5)
    return row


def test_an_app_host_serving_another_hosts_certificate_is_taken_out_of_rotation(
    host: Any, app_hosts: dict[str, Any]
) -> None:
    """The kit's CA signs every app host's certificate, and each names its host: the
    balancer checks that name, so app1 answering with app2's certificate and key (a host
    that took over another's address, or its files) fails the balancer's checks."""
    impostor, victim = (app_hosts[name] for name in APP_HOSTS)
    names = victim.check_output(f"openssl x509 -noout -ext subjectAltName -in {CERTIFICATE}")
    assert f"DNS:{APP_HOSTS[1]}" in names, names
    assert APP_HOSTS[0] not in names, names
    assert _wait_for_status(host, APP_HOSTS[0], "UP")["check_status"] == "L7OK"
    own = {path: impostor.check_output(f"base64 -w0 {path}") for path in (CERTIFICATE, KEY)}
    try:
        for path in (CERTIFICATE, KEY):
            impostor.run_test(f"echo {victim.check_output(f'base64 -w0 {path}')} | base64 -d > {path}")
        # A restart, not a reload: nginx's TLS session cache survives a reload, and the
        # balancer would resume its sessions without seeing a certificate at all. Another
        # machine (the threat) has no such session to offer.
        impostor.run_test("systemctl restart nginx")
        row = _wait_for_status(host, APP_HOSTS[0], "DOWN")
        # Its TLS handshake failed the check: the certificate does not name the host.
        assert row["check_status"].startswith("L6"), row
    finally:
        for path, encoded in own.items():
            impostor.run_test(f"echo {encoded} | base64 -d > {path}")
        impostor.run_test("systemctl restart nginx")
    _wait_for_status(host, APP_HOSTS[0], "UP")


LIMIT = 256  # haproxy_limit_connections_per_client's default
HEADER_TIMEOUT = 10  # haproxy.cfg's timeout http-request


def test_a_flood_from_one_address_is_refused_beyond_its_limit_and_another_address_is_served() -> None:
    """Requests that take 15 s each, on 100 more connections at once than one address may
    open: the balancer refuses those beyond the limit, serves the others, and serves a client
    at another address meanwhile, promptly."""
    outcome: dict[str, Any] = {}
    port = published_port(BALANCER, 443)
    flooding = threading.Thread(target=lambda: outcome.update(flood(port, "/io?ms=15000", LIMIT + 100)))
    flooding.start()
    time.sleep(5.0)  # the flood's requests are in flight
    status, seconds = get_from(APP_HOSTS[1], f"https://{BALANCER}/healthz")
    assert flooding.is_alive(), "the flood ended before the other address was served"
    flooding.join(timeout=120)
    assert not flooding.is_alive(), "the flood did not finish"
    assert status == 200
    assert seconds < 2.0, f"the other address waited {seconds:.2f} s"
    assert outcome.get("200") == LIMIT, outcome
    # Refused at the connection: no HTTP answer at all.
    assert sum(outcome.values()) == LIMIT + 100, outcome
    assert all(result in {"200", "ConnectError", "ReadError", "RemoteProtocolError"} for result in outcome), (
        outcome
    )


def test_slowloris_connections_are_cut_off_by_the_balancer_after_the_header_timeout() -> None:
    results = slowloris(published_port(BALANCER, 443), 100, seconds=HEADER_TIMEOUT + 15)
    assert all(closed is not None for closed in results), results
    assert min(results) >= HEADER_TIMEOUT - 1, results
    assert max(results) < HEADER_TIMEOUT + 5, results


def _without(node: Any, name: str) -> Any:
    """An inventory's YAML without the host `name`, wherever it is listed."""
    if isinstance(node, dict):
        return {key: _without(value, name) for key, value in node.items() if key != name}
    return node


def _wait_for_servers(balancer: Any, wanted: set[str], seconds: float = 30) -> None:
    """Until HAProxy's runtime API lists these servers (a reload hands over to a new process,
    and the old one may answer for a moment)."""
    deadline = time.monotonic() + seconds
    while (servers := set(balancer_servers(balancer))) != wanted:
        assert time.monotonic() < deadline, f"the balancer lists {servers}, not {wanted}, after {seconds} s"
        time.sleep(0.5)


def test_an_app_host_removed_from_the_inventory_leaves_the_balancers_rotation(
    host: Any, tmp_path: Path
) -> None:
    """site.yml run with an inventory that no longer lists an app host takes it out of the
    balancer's servers (nothing of it is left behind to keep it in rotation), and the
    inventory as it was brings it back, checked up under its own name."""
    removed = APP_HOSTS[1]
    inventory = tmp_path / "inventory"
    shutil.copytree(scenario_inventory(), inventory)
    hosts_file = inventory / "ansible_inventory.yml"
    hosts_file.write_text(yaml.safe_dump(_without(yaml.safe_load(hosts_file.read_text()), removed)))
    assert (
        removed
        not in subprocess.run(
            ["ansible-inventory", "-i", str(inventory), "--list"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert set(balancer_servers(host)) == set(APP_HOSTS)
    try:
        run = scenario_run("site", "--limit", BALANCER, inventory=inventory)
        assert run.returncode == 0, run.output[-3000:]
        assert run.recap(BALANCER)["changed"] > 0
        _wait_for_servers(host, {APP_HOSTS[0]})
        assert removed not in host.file(HAPROXY_CONFIG).content_string
    finally:
        back = scenario_run("site", "--limit", BALANCER)
        # Checked here, so that a failure above cannot leave the later tests one host short.
        assert back.returncode == 0, back.output[-3000:]
    _wait_for_servers(host, set(APP_HOSTS))
    assert f"sni str({removed}) check-sni {removed}" in host.file(HAPROXY_CONFIG).content_string
    assert _wait_for_status(host, removed, "UP")["check_status"] == "L7OK"
