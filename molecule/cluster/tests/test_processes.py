"""Reloads, recycled workers, killed processes and full restarts on one app host, under the
mixed load straight at its nginx and, at the same time, through the balancer."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from asgikit_testing.containers import child_pids, low_max_requests, wait_for_new_workers
from asgikit_testing.load import LoadResult, OperationRun
from conftest import (
    APP_HOSTS,
    BALANCER,
    SERVICE,
    SHARED_THREADS,
    SHARED_WEBSOCKETS,
    assert_loads,
    record_loads,
    testinfra_hosts,
    under_two_mixed_loads,
)

pytestmark = pytest.mark.usefixtures("on_v1")
__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module
HOST = APP_HOSTS[0]


def master(app: Any) -> int:
    return int(app.check_output(f"systemctl show --property MainPID --value {SERVICE}"))


def record_both(
    record_property: Callable[..., None], operation: str, run: OperationRun, through: LoadResult
) -> None:
    record_loads(
        record_property, operation, {"straight at one host": run.operation, "through the balancer": through}
    )


def test_full_restart_behind_socket_activation_fails_no_request_of_any_method(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    app = app_hosts[HOST]
    before = master(app)
    run, through, _ = under_two_mixed_loads(
        HOST, BALANCER, lambda: app.run_test(f"systemctl restart {SERVICE}")
    )
    record_both(record_property, "full restart", run, through)
    assert master(app) != before
    assert_loads(run.operation, through)


def test_worker_killed_with_sigkill_loses_only_what_it_was_serving(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    """A worker killed with SIGKILL takes with it what it was serving at that instant: no
    server can answer a request whose handler died, and nginx never sends a POST or PATCH
    twice; a WebSocket on it ends without a close frame. Nothing else may fail: every failed
    request or session started before the kill, there are no more of them than the load has
    in flight at once, and the master replaces the worker."""
    app = app_hosts[HOST]
    pid = master(app)
    workers = child_pids(app, pid)
    victim = min(workers)
    timings: dict[str, float] = {}

    def kill_and_wait() -> None:
        app.run_test(f"kill -KILL {victim}")
        timings["killed"] = time.monotonic()
        while time.monotonic() - timings["killed"] < 10:
            now = child_pids(app, pid)
            if victim not in now and len(now) == len(workers):
                timings["replaced"] = time.monotonic() - timings["killed"]
                return
            time.sleep(0.05)

    run, through, _ = under_two_mixed_loads(HOST, BALANCER, kill_and_wait)
    record_both(record_property, "worker SIGKILL", run, through)
    # How fast is a figure, printed, not asserted: this machine's load decides it.
    figure = f"killed worker replaced after {timings.get('replaced', float('nan')):.2f} s"
    print(figure)
    record_property("figure", figure)
    assert "replaced" in timings, "the killed worker was not replaced within 10 s"
    assert master(app) == pid
    assert_loads(run.operation, through, none_failed=False)
    for load in (run.operation, through):
        failed = [sample for sample in load.samples if sample.failed]
        assert len(failed) <= SHARED_THREADS + SHARED_WEBSOCKETS, load.summary()
        assert all(sample.started < timings["killed"] for sample in failed), failed


def test_master_killed_with_sigkill_is_restarted_and_no_request_of_any_method_fails(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
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

    run, through, _ = under_two_mixed_loads(HOST, BALANCER, kill_master_and_wait)
    record_both(record_property, "master SIGKILL", run, through)
    after = master(app)
    assert after not in (0, before)
    assert int(app.check_output(f"systemctl show --property NRestarts --value {SERVICE}")) >= 1
    assert_loads(run.operation, through)


RELOADS = 10


def test_ten_reloads_in_a_row_fail_no_request_straight_or_through_the_balancer(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    """Ten HUPs in a row on one app host, each sent once the previous one's workers are all
    new, under the mixed load straight at it and through the balancer at once."""
    app = app_hosts[HOST]
    pid = master(app)
    expected = len(child_pids(app, pid))

    def reload_ten_times() -> list[set[int]]:
        generations = [child_pids(app, pid)]
        for _ in range(RELOADS):
            app.run_test(f"systemctl reload {SERVICE}")
            generations.append(wait_for_new_workers(app, pid, generations[-1], expected, seconds=40))
        return generations

    run, through, generations = under_two_mixed_loads(HOST, BALANCER, reload_ten_times)
    record_both(record_property, f"{RELOADS} reloads in a row", run, through)
    for number, (old, new) in enumerate(itertools.pairwise(generations), start=1):
        assert len(new) == expected, f"reload {number}: {len(new)} workers"
        assert not new & old, f"reload {number}: workers not replaced"
    assert master(app) == pid
    assert_loads(run.operation, through)


GUNICORN_CONF = "/etc/refapp/gunicorn_conf.py"


def test_workers_recycled_by_max_requests_fail_no_request_straight_or_through_the_balancer(
    app_hosts: dict[str, Any], record_property: Callable[..., None]
) -> None:
    """With max_requests 300 (+ up to 150) on one app host, every worker there is replaced
    under the mixed load straight at it and through the balancer at once, and nothing fails."""
    app = app_hosts[HOST]
    pid = master(app)
    with low_max_requests(app, pid, SERVICE, GUNICORN_CONF) as before:

        def wait_until_every_worker_was_recycled() -> set[int]:
            deadline = time.monotonic() + 120
            while (now := child_pids(app, pid)) & before and time.monotonic() < deadline:
                time.sleep(0.5)
            return now

        run, through, after = under_two_mixed_loads(HOST, BALANCER, wait_until_every_worker_was_recycled)
    record_both(record_property, "max_requests 300 (+150) recycling", run, through)
    assert not before & after, "a worker was not recycled within 120 s"
    assert master(app) == pid
    assert_loads(run.operation, through)
