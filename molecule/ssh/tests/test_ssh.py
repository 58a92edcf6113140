"""site.yml over SSH, as an operator runs it: `ansible-playbook -i inventories/ssh-lab site.yml`
as the deploy user with sudo, onto two hosts (Debian 12 and 13) with no route to PyPI
(the controller builds each release's artifact; the hosts install it offline).

The tests run in file order, each on the state the one before left, as an operator's session
would: check mode on the fresh hosts, the first run, a second run, check mode again, a deploy.
Molecule's own inventory (a docker connection) serves only to look inside the hosts."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from asgikit_testing.clients import https_client, tls_context
from asgikit_testing.containers import installed_distributions
from asgikit_testing.playbooks import Run, operator_run
from asgikit_testing.wheels import build_wheel

# The hosts and the addresses inventories/ssh-lab gives them.
HOSTS = {"asgikit-ssh1": "172.31.250.10", "asgikit-ssh2": "172.31.250.11"}
PYTHONS = {"asgikit-ssh1": "python3.11", "asgikit-ssh2": "python3.13"}
INVENTORY = "inventories/ssh-lab"
CERTIFICATE = "/etc/nginx/tls/refapp.crt"

# Each test runs once and looks at every host itself (`hosts`): runs of site.yml cover both.
testinfra_hosts = [f"ansible://{next(iter(HOSTS))}"]


@pytest.fixture(scope="module")
def hosts() -> dict[str, Any]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in HOSTS}


def site(*args: str) -> Run:
    """`ansible-playbook -i inventories/ssh-lab site.yml [args]`, from the repository."""
    return operator_run("ansible-playbook", "-i", INVENTORY, "site.yml", *args)


def assert_succeeded(run: Run, names: tuple[str, ...] = tuple(HOSTS)) -> dict[str, dict[str, int]]:
    assert run.returncode == 0, run.output[-4000:]
    counters = {name: run.recap(name) for name in names}
    for name, counts in counters.items():
        assert counts["failed"] == 0, f"{name}: {run.output[-4000:]}"
        assert counts["unreachable"] == 0, f"{name}: {run.output[-4000:]}"
    return counters


@pytest.fixture
def https() -> Iterator[Callable[[Any, str], httpx.Client]]:
    """HTTPS to a host's own address for its name (in the handshake and in Host), verifying
    the certificate it made (which names it)."""
    clients: list[httpx.Client] = []

    def connect(host: Any, name: str) -> httpx.Client:
        context = tls_context(host.file(CERTIFICATE).content_string)
        clients.append(https_client(443, context, address=HOSTS[name], server_name=name))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def test_the_hosts_have_no_route_to_pypi(hosts: dict[str, Any]) -> None:
    # The address pypi.org has from the controller (which reaches it) is out of the hosts'
    # reach, and they cannot even resolve the names.
    pypi = socket.gethostbyname("pypi.org")
    for name, host in hosts.items():
        connect = host.run(f"timeout 6 bash -c 'exec 3<>/dev/tcp/{pypi}/443'")
        assert connect.rc != 0, f"{name}: {connect.stdout}{connect.stderr}"
        assert host.run("getent hosts pypi.org").rc != 0, name
        assert host.run("getent hosts files.pythonhosted.org").rc != 0, name


def test_check_mode_on_fresh_hosts_fails_nowhere_and_changes_nothing(hosts: dict[str, Any]) -> None:
    run = site("--check", "--diff")
    for name, counts in assert_succeeded(run).items():
        assert counts["changed"] > 0, name
    for name, host in hosts.items():
        assert not host.file("/opt/refapp").exists, name
        assert not host.file("/etc/refapp").exists, name
        assert not host.package("nginx").is_installed, name


def test_the_first_run_over_ssh_converges_the_hosts(
    hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    run = site()
    counters = assert_succeeded(run)
    for name, counts in counters.items():
        assert counts["changed"] > 0, name
    changed = ", ".join(f"{name} changed={counts['changed']}" for name, counts in counters.items())
    record_property("figure", f"first run over SSH, two hosts: {run.seconds:.1f} s, {changed}")
    for name, host in hosts.items():
        # Ansible came in over SSH, as the deploy user, with the lab's key.
        assert "Accepted publickey for deploy" in host.check_output("journalctl --no-pager -u ssh"), name


def test_the_hosts_serve_the_app_over_https(
    hosts: dict[str, Any], https: Callable[[Any, str], httpx.Client]
) -> None:
    for name, host in hosts.items():
        client = https(host, name)
        ready = client.get("/readyz")
        assert ready.status_code == 200, name
        assert ready.json()["version"] == "1.0.0", name
        runtime = client.get("/runtime").json()
        assert runtime["event_loop"] == "uvloop.Loop", name
        assert runtime["http_protocol"] == "httptools", name
        assert client.get("/").headers["strict-transport-security"].startswith("max-age="), name


def _handshake(address: str, server_name: str | None) -> str:
    """A TLS handshake with `address`'s port 443, naming `server_name` (None: no name, as a
    client that connects by address); the protocol version it agreed on."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return str(tls.version())


def test_tls_handshakes_for_another_name_or_none_are_refused(hosts: dict[str, Any]) -> None:
    """The site's names hold no address, so nginx completes a handshake only for them: a
    scanner that tries addresses or other names gets no certificate."""
    for name, address in HOSTS.items():
        assert _handshake(address, name) in ("TLSv1.2", "TLSv1.3"), name
        for other in (None, "unknown.example", "asgikit-mirror"):
            with pytest.raises(ssl.SSLError, match=r"(?i)unrecognized.name"):
                _handshake(address, other)


def test_the_releases_came_from_artifacts_for_each_python(hosts: dict[str, Any]) -> None:
    for name, host in hosts.items():
        release = host.file("/opt/refapp/current").linked_to
        assert host.file(f"{release}/release.json").exists, name
        # Installed, then removed from the release; the host holds no index settings.
        assert not host.file(f"{release}/wheels").exists, name
        assert not host.file("/etc/refapp/pip-ca.pem").exists, name
        installed = installed_distributions(host, f"{release}/venv")
        assert installed["uvicorn-worker"] == "0.4.0", name
        assert installed["refapp"] == "1.0.0", name
        # Exactly what the release's requirements pin, every line with a hash.
        pinned = host.file(f"{release}/requirements.txt").content_string.splitlines()
        assert all("--hash=sha256:" in line for line in pinned), name
        assert len(pinned) == len(installed), f"{name}: {pinned} vs {installed}"
        # Compiled wheels made for this host's Python (cp311 on Debian 12, cp313 on 13).
        site_packages = f"{release}/venv/lib/{PYTHONS[name]}/site-packages"
        assert host.file(f"{site_packages}/uvloop").is_directory, name
        assert host.file(f"{site_packages}/httptools").is_directory, name


def test_a_second_run_over_ssh_changes_nothing(record_property: Callable[..., None]) -> None:
    run = site()
    counters = assert_succeeded(run)
    record_property("figure", f"second run over SSH, two hosts: {run.seconds:.1f} s, changed=0")
    for name, counts in counters.items():
        assert counts["changed"] == 0, f"{name}: {run.output[-4000:]}"


def test_a_second_run_over_ssh_on_one_host_changes_nothing(record_property: Callable[..., None]) -> None:
    name = next(iter(HOSTS))
    run = site("--limit", name)
    counts = assert_succeeded(run, (name,))[name]
    figure = f"second run over SSH on one host ({name}): {run.seconds:.1f} s, changed={counts['changed']}"
    print(f"\n{figure}")
    record_property("figure", figure)
    assert counts["changed"] == 0, run.output[-4000:]


def test_check_mode_on_converged_hosts_reports_no_change() -> None:
    run = site("--check", "--diff")
    for name, counts in assert_succeeded(run).items():
        assert counts["changed"] == 0, f"{name}: {run.output[-4000:]}"


def test_deploy_over_ssh_brings_a_new_release(
    hosts: dict[str, Any], https: Callable[[Any, str], httpx.Client], tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path, "2.0.0")
    run = operator_run(
        "ansible-playbook", "-i", INVENTORY, "playbooks/deploy.yml", "-e", f"asgi_app_source={wheel}"
    )
    assert_succeeded(run)
    for name, host in hosts.items():
        assert https(host, name).get("/readyz").json()["version"] == "2.0.0", name
