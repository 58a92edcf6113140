"""Deploys, rollbacks and reloads through the kit's playbooks, under continuous load through
the balancer: no request may fail, and once a playbook returns every response must come
from the release it announced."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.containers import installed_distributions
from asgikit_testing.playbooks import Run, scenario_start
from conftest import (
    APP_HOSTS,
    BALANCER,
    CURRENT,
    LOCK,
    LOCKS,
    MIN_REQUESTS,
    SERVICE,
    DrainWatch,
    assert_loads,
    balancer_servers,
    deploy_records,
    master_pids,
    record_loads,
    run_playbook,
    testinfra_hosts,
    under_load,
    under_two_mixed_loads,
)

__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module


@pytest.mark.usefixtures("on_v1")
def test_rolling_deploy_across_the_cluster_fails_no_request(
    app_hosts: dict[str, Any],
    wheels: dict[str, Path],
    record_property: Callable[..., None],
) -> None:
    masters = master_pids(app_hosts)
    with DrainWatch() as watch:
        run, straight, result = under_two_mixed_loads(
            BALANCER, APP_HOSTS[0], lambda: run_playbook("deploy", "-e", f"asgi_app_source={wheels['2.0.0']}")
        )
    assert result.returncode == 0, result.output[-3000:]
    record_loads(
        record_property,
        "rolling deploy",
        {"through the balancer": run.operation, "straight at one host": straight},
    )
    # One host at a time is drained, and it is drained before its `current` moves.
    looks = watch.observations
    assert looks
    assert all(len(look.drained) <= 1 for look in looks), [sorted(look.drained) for look in looks]
    for name in APP_HOSTS:
        before = looks[0].current[name]
        moved = next(i for i, look in enumerate(looks) if look.current[name] != before)
        drained_then = set(looks[moved].drained)
        assert drained_then == {name}, f"{name}: current moved while the drained hosts were {drained_then}"
        assert any(name in look.drained for look in looks[:moved]), f"{name}: not drained before the switch"
    assert not looks[-1].drained, "a host was left drained"
    assert_loads(run.operation, straight)
    assert set(run.operation.versions) <= {"1.0.0", "2.0.0"}
    # Done means the new version: every answer that names one, after the playbook returned.
    assert run.after.versioned > 0
    assert run.after.versions == {"2.0.0": run.after.versioned}
    # Code only: a HUP on every host, the masters stayed.
    assert master_pids(app_hosts) == masters
    for host in app_hosts.values():
        record = deploy_records(host)[-1]
        assert record["version"] == "2.0.0"
        assert record["deployer"] == "molecule"
        assert record["action"] == "deploy"
        assert record["time"].endswith("Z")


@pytest.mark.usefixtures("on_v2_after_v1")
def test_rollback_returns_to_the_previous_release(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    masters = master_pids(app_hosts)
    run, straight, result = under_two_mixed_loads(BALANCER, APP_HOSTS[0], lambda: run_playbook("rollback"))
    assert result.returncode == 0, result.output[-3000:]
    record_loads(
        record_property,
        "rollback.yml",
        {"through the balancer": run.operation, "straight at one host": straight},
    )
    assert_loads(run.operation, straight)
    assert run.after.versions == {"1.0.0": run.after.versioned}
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


@pytest.mark.usefixtures("on_v1")
def test_code_deploy_on_one_host_fails_no_request_of_any_method_on_that_host(
    app_hosts: dict[str, Any], wheels: dict[str, Path], record_property: Callable[..., None]
) -> None:
    host = APP_HOSTS[0]
    masters = master_pids(app_hosts)
    run, through, result = under_two_mixed_loads(
        host,
        BALANCER,
        lambda: run_playbook("deploy", "--limit", host, "-e", f"asgi_app_source={wheels['2.0.0']}"),
    )
    assert result.returncode == 0, result.output[-3000:]
    record_loads(
        record_property,
        "deploy on one host",
        {"straight at it": run.operation, "through the balancer": through},
    )
    assert_loads(run.operation, through)
    # Every answer that names a version (HEAD and WebSocket messages do not) names 2.0.0.
    assert run.after.versioned > 0
    assert run.after.versions == {"2.0.0": run.after.versioned}
    assert master_pids(app_hosts)[host] == masters[host]


@pytest.mark.usefixtures("on_v1")
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
    assert run.operation.total >= MIN_REQUESTS
    assert run.operation.failed == 0, run.operation.summary()
    assert run.operation.retried == 0, run.operation.summary()
    assert set(run.operation.versions) == {"1.0.0"}
    assert run.after.versions == {"1.0.0": run.after.total}


@pytest.mark.usefixtures("on_v1")
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
    assert run.operation.total >= MIN_REQUESTS
    assert run.operation.failed == 0, run.operation.summary()
    assert run.operation.retried == 0, run.operation.summary()
    assert run.after.versions == {"1.0.0": run.after.total}
    assert master_pids(app_hosts) == masters
    # Back in rotation on the balancer (`host` is the balancer), and checked up.
    assert balancer_servers(host)[APP_HOSTS[0]]["status"] == "UP"


def test_balancer_sees_every_app_host_up_through_its_health_check(host: Any) -> None:
    assert BALANCER in host.check_output("hostname")
    servers = balancer_servers(host)
    assert set(servers) == set(APP_HOSTS)
    for name, row in servers.items():
        assert row["status"] == "UP", (name, row)
        # Layer 7 check passed: the app's health path answered through the app host's nginx.
        assert row["check_status"] == "L7OK", (name, row)


def test_rolling_reload_replaces_every_worker_and_fails_no_request(
    app_hosts: dict[str, Any],
    record_property: Callable[..., None],
) -> None:
    masters = master_pids(app_hosts)

    def workers() -> dict[str, set[str]]:
        return {
            name: set(host.check_output(f"pgrep -P {masters[name]}").split())
            for name, host in app_hosts.items()
        }

    before = workers()

    def reload_then_read_workers() -> tuple[Run, dict[str, set[str]]]:
        # Read the moment the playbook returns: done must mean every worker is new.
        return run_playbook("reload"), workers()

    run, straight, (result, after) = under_two_mixed_loads(BALANCER, APP_HOSTS[0], reload_then_read_workers)
    assert result.returncode == 0, result.output[-3000:]
    record_loads(
        record_property,
        "rolling reload.yml",
        {"through the balancer": run.operation, "straight at one host": straight},
    )
    for name in APP_HOSTS:
        assert after[name], f"{name}: no workers"
        assert not before[name] & after[name], f"{name}: old workers still there when reload.yml returned"
    assert_loads(run.operation, straight)
    assert master_pids(app_hosts) == masters


def test_balancer_spreads_requests_over_both_app_hosts(through_balancer: Callable[[], httpx.Client]) -> None:
    with through_balancer() as client:
        hosts = {client.get("/runtime").json()["hostname"] for _ in range(40)}
    assert hosts == set(APP_HOSTS)


@pytest.mark.usefixtures("on_v1")
def test_a_second_deploy_is_refused_while_the_first_holds_the_lock(
    app_hosts: dict[str, Any], wheels: dict[str, Path]
) -> None:
    """Two real deploys of the same host race: the second starts while the first holds the
    lock, is refused before it changes anything, and the first completes."""
    host = app_hosts[APP_HOSTS[0]]
    args = ("--limit", APP_HOSTS[0], "-e", f"asgi_app_source={wheels['2.0.0']}")
    records_before = len(deploy_records(host))
    first = scenario_start("deploy", *args)
    deadline = time.monotonic() + 300
    while host.run(f"test -s {LOCK}/owner").rc != 0:
        assert first.running(), first.finish().output[-3000:]
        assert time.monotonic() < deadline, "the first deploy never took the lock"
        time.sleep(0.2)
    second = run_playbook("deploy", *args)
    done = first.finish()
    assert second.returncode != 0
    assert f"Another run holds the lock {LOCK} on {APP_HOSTS[0]}" in second.output
    assert "molecule since " in second.output
    assert done.returncode == 0, done.output[-3000:]
    assert '"version": "2.0.0"' in host.file("/opt/refapp/current/release.json").content_string
    assert host.run(f"test -e {LOCK}").rc != 0, "the first deploy left its lock"
    # The refused deploy wrote no record: one more record, the first deploy's.
    records = deploy_records(host)
    assert len(records) == records_before + 1
    assert (records[-1]["action"], records[-1]["version"]) == ("deploy", "2.0.0")


def test_site_reload_and_rollback_stop_while_the_lock_is_held_and_change_nothing(
    app_hosts: dict[str, Any],
) -> None:
    """Every playbook that changes a host takes its lock: while another run holds it (here a
    holder written as a run writes it), site.yml, reload.yml and rollback.yml each stop with
    the holder's name before they change anything on that host."""
    host = app_hosts[APP_HOSTS[0]]
    current = host.check_output(f"readlink {CURRENT}")
    master = host.check_output(f"systemctl show --property MainPID --value {SERVICE}")
    records = len(deploy_records(host))
    host.run_test(f"mkdir {LOCK} && echo 'someone since now, Another run' > {LOCK}/owner")
    try:
        names = ("site", "reload", "rollback")
        runs = {name: scenario_start(name, "--limit", APP_HOSTS[0]) for name in names}
        finished = {name: run.finish() for name, run in runs.items()}
    finally:
        host.run_test(f"rm -rf {LOCK}")
    for name, run in finished.items():
        assert run.returncode != 0, f"{name}.yml ran while the lock was held"
        assert f"Another run holds the lock {LOCK} on {APP_HOSTS[0]}: someone since now" in run.output, name
        assert run.recap(APP_HOSTS[0])["changed"] == 0, (name, run.output[-3000:])
    assert host.check_output(f"readlink {CURRENT}") == current
    assert host.check_output(f"systemctl show --property MainPID --value {SERVICE}") == master
    assert len(deploy_records(host)) == records


def test_no_other_local_user_can_take_fake_or_redirect_the_lock(app_hosts: dict[str, Any]) -> None:
    """The lock lives in a directory of root's alone, not in /run/lock (which every local
    user can write): another user can neither make the lock, nor plant a link or a file in
    its place, nor read who holds it."""
    host = app_hosts[APP_HOSTS[0]]
    assert host.file(LOCKS).user == "root"
    assert host.file(LOCKS).mode == 0o700
    assert host.file(LOCKS).is_directory
    assert not host.file(LOCKS).is_symlink
    for attempt in (f"mkdir {LOCK}", f"ln -s /etc {LOCK}", f"ls {LOCKS}"):
        result = host.run(f"runuser -u nobody -- {attempt}")
        assert result.rc != 0, f"nobody could {attempt}"
        assert "Permission denied" in result.stderr, result.stderr


def test_a_value_the_balancer_would_misread_stops_every_host_before_any_change(
    app_hosts: dict[str, Any], host: Any
) -> None:
    """The app servers accept a health path with '#', which would start a comment in
    haproxy.cfg: the balancer's check refuses it, and since every host's input is checked
    first, neither the balancer nor any app host changes."""
    files = {APP_HOSTS[0]: "/etc/refapp/gunicorn_conf.py", BALANCER: "/etc/haproxy/haproxy.cfg"}
    hosts = {**app_hosts, BALANCER: host}

    def fingerprint() -> dict[str, str]:
        return {name: hosts[name].file(path).sha256sum for name, path in files.items()}

    before = fingerprint()
    run = run_playbook("site", "-e", "asgi_app_health_path=/healthz#x")
    assert run.returncode != 0, run.output[-3000:]
    assert "haproxy_health_path (wired from asgi_app_health_path) must start with '/'" in run.output
    assert run.recap(BALANCER)["failed"] == 1
    for name in APP_HOSTS:
        assert run.recap(name)["changed"] == 0, name
    assert run.recap(BALANCER)["changed"] == 0
    assert "Take the host's lock" not in run.output
    assert fingerprint() == before


@pytest.mark.usefixtures("on_v1")
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
    assert run.operation.total >= MIN_REQUESTS
    assert run.operation.failed == 0, run.operation.summary()
    assert run.operation.retried == 0, run.operation.summary()
    assert run.after.versions == {"2.0.0": run.after.total}
    for host in app_hosts.values():
        assert installed_distributions(host, "/opt/refapp/current/venv")["uvicorn"] == "0.53.0"
