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
    record_figure,
    run_playbook,
    testinfra_hosts,
    under_mixed_load,
)

pytestmark = pytest.mark.usefixtures("on_v1")
__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module

CERTIFICATE = "/etc/nginx/tls/refapp.crt"


def serial(host: Any) -> str:
    return host.check_output(f"openssl x509 -in {CERTIFICATE} -noout -serial")


def test_new_balancer_configuration_and_app_host_certificates_go_live_with_no_failed_request(
    host: Any, app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    """One site.yml run: a new HAProxy setting (a reload of HAProxy) and, on each app host, a
    new certificate from the kit's CA (its old one removed), so nginx reloads there."""
    before = {name: serial(app) for name, app in app_hosts.items()}
    for app in app_hosts.values():
        app.run_test(f"rm {CERTIFICATE}")
    try:
        run, result = under_mixed_load(
            BALANCER, lambda: run_playbook("site", "-e", "haproxy_server_timeout=61")
        )
        assert result.returncode == 0, result.output[-3000:]
        assert "timeout server 61s" in host.file("/etc/haproxy/haproxy.cfg").content_string
    finally:
        restored = run_playbook("site")
    assert restored.returncode == 0, restored.output[-3000:]
    operation = "site.yml: HAProxy reloaded, new app host certificates, through the balancer"
    record_figure(record_property, operation, run.operation)
    assert "RUNNING HANDLER [haproxy : Reload haproxy]" in result.output
    # nginx reloaded once per app host, each in its own batch, drained.
    assert result.output.count("TASK [Reload nginx]") == len(app_hosts), result.output[-3000:]
    after = {name: serial(app) for name, app in app_hosts.items()}
    assert all(after[name] != before[name] for name in app_hosts), (before, after)
    assert all(row["status"] == "UP" for row in balancer_servers(host).values())
    assert run.operation.total >= MIN_REQUESTS
    assert set(run.operation.methods) == ALL_METHODS, run.operation.summary()
    assert run.operation.failed == 0, run.operation.summary()
    assert run.operation.retried == 0, run.operation.summary()
