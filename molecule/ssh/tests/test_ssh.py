"""site.yml over SSH, as an operator runs it: `ansible-playbook -i inventories/ssh-lab site.yml`
as the deploy user with sudo, onto a host with no route to PyPI (wheelhouse mode).

The tests run in file order, each on the state the one before left, as an operator's session
would: check mode on the fresh host, the first run, a second run, check mode again, a deploy.
Molecule's own inventory (a docker connection) serves only to look inside the host."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.clients import https_client, tls_context
from asgikit_testing.playbooks import Run, operator_run
from asgikit_testing.wheels import build_wheel

HOST = "asgikit-ssh1"
ADDRESS = "172.31.250.10"
INVENTORY = "inventories/ssh-lab"
CERTIFICATE = "/etc/nginx/tls/refapp.crt"

testinfra_hosts = [f"ansible://{HOST}"]
# Every test takes the (parametrized) host, so that pytest keeps them in file order: it groups
# tests by parameter, and a test without it would run after all those with it.
pytestmark = pytest.mark.usefixtures("host")


def site(*args: str) -> Run:
    """`ansible-playbook -i inventories/ssh-lab site.yml [args]`, from the repository."""
    return operator_run("ansible-playbook", "-i", INVENTORY, "site.yml", *args)


def assert_succeeded(run: Run) -> dict[str, int]:
    counters = run.recap(HOST)
    assert run.returncode == 0, run.output[-4000:]
    assert counters["failed"] == 0, run.output[-4000:]
    assert counters["unreachable"] == 0, run.output[-4000:]
    return counters


@pytest.fixture
def https(host: Any) -> Iterator[httpx.Client]:
    """HTTPS to the host's own address, verifying the certificate it made (which names it)."""
    context: ssl.SSLContext = tls_context(host.file(CERTIFICATE).content_string)
    with https_client(443, context, address=ADDRESS) as client:
        yield client


def test_the_host_has_no_route_to_pypi(host: Any) -> None:
    # The address pypi.org has from the controller (which reaches it) is out of the host's reach,
    # and the host cannot even resolve the name.
    pypi = socket.gethostbyname("pypi.org")
    connect = host.run(f"timeout 6 bash -c 'exec 3<>/dev/tcp/{pypi}/443'")
    assert connect.rc != 0, connect.stdout + connect.stderr
    assert host.run("getent hosts pypi.org").rc != 0
    assert host.run("getent hosts files.pythonhosted.org").rc != 0


def test_check_mode_on_the_fresh_host_fails_nowhere_and_changes_nothing(host: Any) -> None:
    run = site("--check", "--diff")
    counters = assert_succeeded(run)
    assert counters["changed"] > 0
    assert not host.file("/opt/refapp").exists
    assert not host.file("/etc/refapp").exists
    assert not host.package("nginx").is_installed


def test_the_first_run_over_ssh_converges_the_host(host: Any, record_property: Callable[..., None]) -> None:
    run = site()
    counters = assert_succeeded(run)
    assert counters["changed"] > 0
    record_property("figure", f"first run over SSH: {run.seconds:.1f} s, changed={counters['changed']}")
    # Ansible came in over SSH, as the deploy user, with the lab's key.
    assert "Accepted publickey for deploy" in host.check_output("journalctl --no-pager -u ssh")


def test_the_host_serves_the_app_over_https(https: httpx.Client) -> None:
    ready = https.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["version"] == "1.0.0"
    runtime = https.get("/runtime").json()
    assert runtime["event_loop"].startswith("uvloop")
    assert runtime["http_protocol"] == "httptools"
    assert https.get("/").headers["strict-transport-security"].startswith("max-age=")


def test_the_release_came_from_the_wheelhouse(host: Any) -> None:
    release = host.file("/opt/refapp/current").linked_to
    assert host.file(f"{release}/release.json").exists
    # Installed, then removed from the release; the host kept no index settings.
    assert not host.file(f"{release}/wheelhouse").exists
    assert not host.file("/etc/refapp/pip-ca.pem").exists
    packages = host.check_output(f"{release}/venv/bin/python -m pip list --format=freeze")
    assert "uvicorn-worker==0.4.0" in packages
    assert "refapp==1.0.0" in packages


def test_a_second_run_over_ssh_changes_nothing(record_property: Callable[..., None]) -> None:
    run = site()
    counters = assert_succeeded(run)
    record_property("figure", f"second run over SSH: {run.seconds:.1f} s, changed={counters['changed']}")
    print(f"\nsecond run over SSH: {run.seconds:.1f} s, changed={counters['changed']}")
    assert counters["changed"] == 0, run.output[-4000:]


def test_check_mode_on_the_converged_host_reports_no_change() -> None:
    run = site("--check", "--diff")
    counters = assert_succeeded(run)
    assert counters["changed"] == 0, run.output[-4000:]


def test_deploy_over_ssh_brings_a_new_release(https: httpx.Client, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "2.0.0")
    run = operator_run(
        "ansible-playbook", "-i", INVENTORY, "playbooks/deploy.yml", "-e", f"asgi_app_wheel={wheel}"
    )
    assert_succeeded(run)
    assert https.get("/readyz").json()["version"] == "2.0.0"
