"""A new configuration or certificate goes live under the mixed load through the balancer:
HAProxy reloads itself (its previous process answers on idle connections before it closes
them), and each app host's nginx reloads while that host is drained on the balancer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest import (
    ALL_METHODS,
    BALANCER,
    MIN_REQUESTS,
    balancer_servers,
    run_playbook,
    testinfra_hosts,
    under_mixed_load,
)

pytestmark = pytest.mark.usefixtures("on_v1")
__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module

CERTIFICATE = "/etc/nginx/tls/refapp.crt"
RELOAD_MARKER = "/run/asgikit-nginx-reload-pending"


def served_serial(balancer: Any, app_host: str) -> str:
    """The serial of the certificate an app host's nginx serves, as the balancer sees it."""
    return balancer.check_output(
        f"openssl s_client -connect {app_host}:443 -servername localhost </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial"
    )


def test_new_balancer_configuration_and_app_host_certificates_go_live_with_no_failed_request(
    host: Any, app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    """One site.yml run: a new HAProxy setting (a reload of HAProxy) and, on each app host, a
    new certificate from the kit's CA (its old one removed), so nginx reloads there."""
    before = {name: served_serial(host, name) for name in app_hosts}
    assert all(before.values()), before
    for app in app_hosts.values():
        app.run_test(f"rm {CERTIFICATE}")
    # The new setting stays: it changes nothing the other tests look at, and a later site.yml
    # run would put the default back (reloading HAProxy once more).
    run, result = under_mixed_load(BALANCER, lambda: run_playbook("site", "-e", "haproxy_server_timeout=61"))
    assert result.returncode == 0, result.output[-3000:]
    assert "timeout server 61s" in host.file("/etc/haproxy/haproxy.cfg").content_string
    operation = "site.yml: HAProxy reloaded, new app host certificates, through the balancer"
    record_property("load", run.operation.record(operation))
    assert "RUNNING HANDLER [haproxy : Reload haproxy]" in result.output
    # Each app host's nginx serves its new certificate: it reloaded (drained, in the last
    # play), and no reload is left pending.
    after = {name: served_serial(host, name) for name in app_hosts}
    assert all(after[name] != before[name] for name in app_hosts), (before, after)
    assert all(not app.file(RELOAD_MARKER).exists for app in app_hosts.values())
    assert all(row["status"] == "UP" for row in balancer_servers(host).values())
    assert run.operation.total >= MIN_REQUESTS
    assert set(run.operation.methods) == ALL_METHODS, run.operation.summary()
    assert run.operation.failed == 0, run.operation.summary()
    assert run.operation.retried == 0, run.operation.summary()
