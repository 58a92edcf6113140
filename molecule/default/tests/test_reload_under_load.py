"""Ten `systemctl reload`s in a row, and workers recycled by max_requests, under the mixed
load straight at the host: the master stays, every worker is replaced, nothing fails."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import testinfra

from asgikit_testing.containers import (
    child_pids,
    low_max_requests,
    main_pid,
    usable_cpus,
    wait_for_new_workers,
)
from asgikit_testing.load import BackgroundLoad, report_rows
from conftest import GUNICORN_CONF, SERVICE


@pytest.fixture(scope="module")
def host() -> Any:
    """The Debian 13 host alone: the cluster scenario runs both operations on a Debian 12
    app host, under the same mixed load straight at it and a second one through the balancer."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host("ansible://asgikit-debian13", ansible_inventory=inventory)


RELOADS = 10
# Requests sent after each reload before the next one, so the load crosses every reload:
# at least 3,000 during the ten (README).
REQUESTS_PER_RELOAD = 300


def test_ten_reloads_in_a_row_replace_every_worker_and_fail_no_request_of_any_method(
    host: Any, mixed_load: Callable[..., BackgroundLoad], record_property: Callable[..., None]
) -> None:
    """Ten HUPs, each sent once the previous one's workers are all new, under the mixed load
    (every method, WebSockets) straight at this host: nothing fails and nothing is retried."""
    master = main_pid(host, SERVICE)
    expected = 2 * usable_cpus(host, master) + 1
    assert len(child_pids(host, master)) == expected
    log_lines_before = int(host.check_output("wc -l < /var/log/nginx/error.log"))
    load = mixed_load()
    with load:
        time.sleep(1.0)
        started = time.monotonic()
        reload_times: list[float] = []
        for number in range(RELOADS):
            old = child_pids(host, master)
            reloaded = time.monotonic()
            reload_times.append(reloaded)
            host.run_test(f"systemctl reload {SERVICE}")
            new = wait_for_new_workers(host, master, old, expected, seconds=40)
            assert len(new) == expected, f"reload {number + 1}: {len(new)} workers"
            assert not new & old, f"reload {number + 1}: workers not replaced"
            load.wait_for(REQUESTS_PER_RELOAD, since=reloaded, timeout=60)
        ended = time.monotonic()
        time.sleep(1.0)  # keep the load on the new workers for a moment
    during = load.result.between(started, ended)
    print("\n" + "\n".join(report_rows([("operation", during, ended - started)])))
    record_property(
        "load", during.record(f"{RELOADS} reloads in a row, straight at {host.backend.get_hostname()}")
    )
    assert main_pid(host, SERVICE) == master, "reload must not replace the master"
    assert set(during.methods) == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "WS"}
    assert during.total >= RELOADS * REQUESTS_PER_RELOAD, during.summary()
    assert all(part.total >= 100 for part in during.methods.values()), during.summary()
    new_log = host.check_output(f"tail -n +{log_lines_before + 1} /var/log/nginx/error.log")
    # A failure, told by when it started: which reload it followed, how long after, and how
    # long it lasted (seconds); and what nginx logged meanwhile.
    failures = [
        (
            sample.method,
            sum(1 for t in reload_times if t <= sample.started),
            round(sample.started - max((t for t in reload_times if t <= sample.started), default=started), 2),
            round(sample.latency, 2),
            sample.error or sample.status,
        )
        for sample in during.samples
        if sample.failed or sample.retried
    ]
    assert during.failed == 0, (during.summary(), failures, new_log[-3000:], service_warnings(host))
    assert during.retried == 0, (during.summary(), failures, new_log[-3000:], service_warnings(host))
    # Nor did nginx retry one unseen: it logs every upstream connection that failed.
    assert "upstream" not in new_log, new_log[-3000:]


def service_warnings(host: Any) -> str:
    """The service's journal lines of the last 10 minutes that tell of a worker cut short or
    failing: read when a load test fails, to tell why."""
    pattern = "Cancel|TIMEOUT|Exception|Fatal|Error|Traceback|SIGABRT|SIGKILL"
    journal = f"journalctl --unit {SERVICE} --since -10min --output short-monotonic"
    return host.run(f"{journal} | grep -E '{pattern}' | tail -n 30").stdout


def test_workers_recycled_by_max_requests_fail_no_request_of_any_method(
    host: Any, mixed_load: Callable[..., BackgroundLoad], record_property: Callable[..., None]
) -> None:
    """gunicorn_max_requests retires each worker after its share of requests: with a low
    limit, every worker is replaced several times under the mixed load, and nothing fails.
    The jitter keeps its production proportion (half the limit here), so that workers do
    not all retire at the same moment, which is what the jitter is for."""
    master = main_pid(host, SERVICE)
    with low_max_requests(host, master, SERVICE, GUNICORN_CONF) as before:
        log_lines_before = int(host.check_output("wc -l < /var/log/nginx/error.log"))
        load = mixed_load(max_seconds=120)
        with load:
            load.wait_for(8_000, since=0.0, timeout=110)
        after = child_pids(host, master)
    result = load.result
    print("\n" + "\n".join(report_rows([("operation", result, 0.0)])))
    record_property(
        "load", result.record(f"max_requests 300 (+150) recycling, straight at {host.backend.get_hostname()}")
    )
    assert not before & after, "no worker was recycled"
    assert main_pid(host, SERVICE) == master
    assert result.failed == 0, result.summary()
    assert result.retried == 0, result.summary()
    new_log = host.check_output(f"tail -n +{log_lines_before + 1} /var/log/nginx/error.log")
    assert "upstream" not in new_log, new_log[-3000:]
