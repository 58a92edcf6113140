"""Killed processes and full restarts under load, straight at one app host's nginx."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from asgikit_testing.containers import child_pids
from conftest import APP_HOSTS, SERVICE, client_for, testinfra_hosts, under_load

pytestmark = pytest.mark.usefixtures("on_v1")
__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module
HOST = APP_HOSTS[0]


def master(app: Any) -> int:
    return int(app.check_output(f"systemctl show --property MainPID --value {SERVICE}"))


def test_full_restart_behind_socket_activation_fails_no_request(app_hosts: dict[str, Any]) -> None:
    app = app_hosts[HOST]
    before = master(app)
    run, _ = under_load(client_for(HOST), lambda: app.run_test(f"systemctl restart {SERVICE}"))
    assert master(app) != before
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"


def test_worker_killed_with_sigkill_is_replaced_and_no_request_fails(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    app = app_hosts[HOST]
    pid = master(app)
    workers = child_pids(app, pid)
    victim = min(workers)
    timings: dict[str, float] = {}

    def kill_and_wait() -> None:
        app.run_test(f"kill -KILL {victim}")
        killed = time.monotonic()
        while time.monotonic() - killed < 10:
            now = child_pids(app, pid)
            if victim not in now and len(now) == len(workers):
                timings["replaced"] = time.monotonic() - killed
                return
            time.sleep(0.05)

    run, _ = under_load(client_for(HOST), kill_and_wait, min_requests=5_000)
    # How fast is a figure, printed, not asserted: this machine's load decides it.
    figure = f"killed worker replaced after {timings.get('replaced', float('nan')):.2f} s"
    print(figure)
    record_property("figure", figure)
    assert "replaced" in timings, "the killed worker was not replaced within 10 s"
    assert master(app) == pid
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"


def test_master_killed_with_sigkill_is_restarted_and_no_request_fails(app_hosts: dict[str, Any]) -> None:
    app = app_hosts[HOST]
    before = master(app)

    def kill_master_and_wait() -> None:
        app.run_test(f"kill -KILL {before}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = app.run(f"systemctl is-active {SERVICE}").stdout.strip()
            if state == "active" and master(app) not in (0, before) and child_pids(app, master(app)):
                return
            time.sleep(0.2)

    run, _ = under_load(client_for(HOST), kill_master_and_wait)
    after = master(app)
    assert after not in (0, before)
    assert int(app.check_output(f"systemctl show --property NRestarts --value {SERVICE}")) >= 1
    assert run.operation.total >= 20_000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
