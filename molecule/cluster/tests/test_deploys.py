"""Deploys, rollbacks and reloads through the kit's playbooks, under continuous load through
the balancer: no request may fail, and once a playbook returns every response must come
from the release it announced."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.containers import installed_distributions
from conftest import (
    APP_HOSTS,
    BALANCER,
    client_for,
    master_pids,
    run_playbook,
    testinfra_hosts,
    under_load,
)

pytestmark = pytest.mark.usefixtures("on_v1")
__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module


def deploy_records(host: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in host.file("/opt/refapp/deploys.jsonl").content_string.splitlines()]


def test_rolling_deploy_across_the_cluster_fails_no_request(
    app_hosts: dict[str, Any], wheels: dict[str, Path], through_balancer: Callable[[], httpx.Client]
) -> None:
    masters = master_pids(app_hosts)
    run, result = under_load(
        through_balancer, lambda: run_playbook("deploy", "-e", f"asgi_app_source={wheels['2.0.0']}")
    )
    assert result.returncode == 0, result.output[-3000:]
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert set(run.operation.versions) <= {"1.0.0", "2.0.0"}
    # Done means the new version: every response after the playbook returned.
    assert run.after.total > 0
    assert run.after.versions == {"2.0.0": run.after.total}
    # Code only: a HUP on every host, the masters stayed.
    assert master_pids(app_hosts) == masters
    for host in app_hosts.values():
        record = deploy_records(host)[-1]
        assert record["version"] == "2.0.0"
        assert record["deployer"] == "molecule"
        assert record["action"] == "deploy"
        assert record["time"].endswith("Z")


def test_code_deploy_on_one_host_fails_no_request_on_that_host(
    app_hosts: dict[str, Any], wheels: dict[str, Path]
) -> None:
    host = APP_HOSTS[0]
    masters = master_pids(app_hosts)
    run, result = under_load(
        client_for(host),
        lambda: run_playbook("deploy", "--limit", host, "-e", f"asgi_app_source={wheels['2.0.0']}"),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert run.after.versions == {"2.0.0": run.after.total}
    assert master_pids(app_hosts)[host] == masters[host]


def test_broken_release_never_touches_the_running_one(
    app_hosts: dict[str, Any], wheels: dict[str, Path], through_balancer: Callable[[], httpx.Client]
) -> None:
    run, result = under_load(
        through_balancer, lambda: run_playbook("deploy", "-e", f"asgi_app_source={wheels['broken']}")
    )
    assert result.returncode != 0
    assert "Check that the app imports from the release" in result.output
    assert "No module named 'refapp_no_such_module'" in result.output
    assert "The running release was not touched." in result.output
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert set(run.operation.versions) == {"1.0.0"}
    assert run.after.versions == {"1.0.0": run.after.total}


def test_release_failing_its_health_check_rolls_back_by_itself(
    host: Any,
    app_hosts: dict[str, Any],
    wheels: dict[str, Path],
    through_balancer: Callable[[], httpx.Client],
) -> None:
    masters = master_pids(app_hosts)
    run, result = under_load(
        through_balancer,
        lambda: run_playbook(
            "deploy", "-e", f"asgi_app_source={wheels['unready']}", "-e", "gunicorn_activation_timeout=10"
        ),
    )
    assert result.returncode != 0
    assert "Wait until the app, asked over the unix socket, is healthy on 2.0.2+unready" in result.output
    assert "Rolled back to 1.0.0-" in result.output
    # The first host was switched, failed its check, went back; the play stopped there.
    first = app_hosts[APP_HOSTS[0]]
    actions = [record["action"] for record in deploy_records(first)[-2:]]
    assert actions == ["deploy", "automatic-rollback"]
    assert deploy_records(app_hosts[APP_HOSTS[1]])[-1]["version"] == "1.0.0"
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert run.after.versions == {"1.0.0": run.after.total}
    assert master_pids(app_hosts) == masters
    # Back in rotation on the balancer (`host` is the balancer).
    backend = host.file(f"/etc/nginx/backends/{APP_HOSTS[0]}.conf").content_string
    assert backend.startswith(f"server {APP_HOSTS[0]}:443")
    assert "down" not in backend


def test_rollback_returns_to_the_previous_release(
    app_hosts: dict[str, Any], wheels: dict[str, Path], through_balancer: Callable[[], httpx.Client]
) -> None:
    deployed = run_playbook("deploy", "-e", f"asgi_app_source={wheels['2.0.0']}")
    assert deployed.returncode == 0, deployed.output[-3000:]
    masters = master_pids(app_hosts)
    run, result = under_load(through_balancer, lambda: run_playbook("rollback"))
    assert result.returncode == 0, result.output[-3000:]
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert run.after.versions == {"1.0.0": run.after.total}
    assert master_pids(app_hosts) == masters
    for host in app_hosts.values():
        assert deploy_records(host)[-1]["action"] == "rollback"


def test_rollback_to_a_named_release(app_hosts: dict[str, Any], wheels: dict[str, Path]) -> None:
    deployed = run_playbook("deploy", "-e", f"asgi_app_source={wheels['2.0.0']}")
    assert deployed.returncode == 0, deployed.output[-3000:]
    v1 = next(r["release"] for r in deploy_records(app_hosts[APP_HOSTS[0]]) if r["version"] == "1.0.0")
    result = run_playbook("rollback", "--limit", APP_HOSTS[0], "-e", f"asgi_app_rollback_to={v1}")
    assert result.returncode == 0, result.output[-3000:]
    assert app_hosts[APP_HOSTS[0]].file("/opt/refapp/current").linked_to == f"/opt/refapp/releases/{v1}"
    assert (
        '"version": "2.0.0"'
        in app_hosts[APP_HOSTS[1]].file("/opt/refapp/current/release.json").content_string
    )


def test_rolling_reload_replaces_every_worker_and_fails_no_request(
    app_hosts: dict[str, Any], through_balancer: Callable[[], httpx.Client]
) -> None:
    masters = master_pids(app_hosts)
    workers = {
        name: set(host.check_output(f"pgrep -P {masters[name]}").split()) for name, host in app_hosts.items()
    }
    run, result = under_load(through_balancer, lambda: run_playbook("reload"))
    assert result.returncode == 0, result.output[-3000:]
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert master_pids(app_hosts) == masters
    for name, host in app_hosts.items():
        assert not workers[name] & set(host.check_output(f"pgrep -P {masters[name]}").split())


def test_a_second_deploy_is_refused_while_one_holds_the_lock(
    app_hosts: dict[str, Any], wheels: dict[str, Path]
) -> None:
    host = app_hosts[APP_HOSTS[0]]
    host.run_test(
        "mkdir /run/lock/refapp-deploy && echo 'someone since earlier' > /run/lock/refapp-deploy/owner"
    )
    try:
        result = run_playbook("deploy", "--limit", APP_HOSTS[0], "-e", f"asgi_app_source={wheels['2.0.0']}")
    finally:
        host.run_test("rm -rf /run/lock/refapp-deploy")
    assert result.returncode != 0
    assert "Another deploy holds the lock /run/lock/refapp-deploy" in result.output
    assert "someone since earlier" in result.output
    assert '"version": "1.0.0"' in host.file("/opt/refapp/current/release.json").content_string


def test_balancer_spreads_requests_over_both_app_hosts(through_balancer: Callable[[], httpx.Client]) -> None:
    with through_balancer() as client:
        hosts = {client.get("/runtime").json()["hostname"] for _ in range(40)}
    assert hosts == set(APP_HOSTS)


def test_balancer_marks_no_app_host_down_after_converge(host: Any) -> None:
    assert host.file("/etc/nginx/sites-enabled/balancer.conf").exists
    for name in APP_HOSTS:
        assert host.file(f"/etc/nginx/backends/{name}.conf").content_string == (
            f"server {name}:443 max_fails=1 fail_timeout=5s;\n"
        )
    assert BALANCER in host.check_output("hostname")


def test_new_runtime_restarts_behind_the_socket_and_fails_no_request(
    app_hosts: dict[str, Any], wheels: dict[str, Path], through_balancer: Callable[[], httpx.Client]
) -> None:
    # Another uvicorn: the release's runtime differs, so a HUP would keep old server code
    # in the master; the deploy restarts instead, while the socket unit holds connections.
    packages = ["gunicorn==27.0.1", "uvicorn[standard]==0.53.0", "uvicorn-worker==0.4.0"]
    masters = master_pids(app_hosts)
    run, result = under_load(
        through_balancer,
        lambda: run_playbook(
            "deploy",
            "-e",
            f"asgi_app_source={wheels['2.0.0']}",
            "-e",
            json.dumps({"asgi_app_server_packages": packages}),
        ),
    )
    assert result.returncode == 0, result.output[-3000:]
    assert "Restart the service; its socket stays open" in result.output
    after = master_pids(app_hosts)
    assert all(after[name] != masters[name] for name in APP_HOSTS)
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert run.after.versions == {"2.0.0": run.after.total}
    for host in app_hosts.values():
        assert installed_distributions(host, "/opt/refapp/current/venv")["uvicorn"] == "0.53.0"
