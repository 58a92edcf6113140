"""`systemctl reload` is a HUP: the master stays, every worker is replaced, nothing fails."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from asgikit_testing.clients import https_client, wss_connect
from asgikit_testing.containers import (
    child_pids,
    low_max_requests,
    main_pid,
    reload_and_wait,
    usable_cpus,
    wait_for_new_workers,
)
from asgikit_testing.load import BackgroundLoad, report_rows
from conftest import CURRENT, GUNICORN_CONF, SERVICE

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


def point_current_at(host: Any, target: str) -> None:
    """Moves the link the way a deploy does: a new link renamed over the old one."""
    host.run_test(f"ln -sfn {target} {CURRENT}.probe-link && mv -T {CURRENT}.probe-link {CURRENT}")


def test_running_workers_keep_their_release_when_current_moves(
    host: Any, https_port: int, tls: ssl.SSLContext
) -> None:
    """A deploy moves `current` before the HUP. Until their graceful exit, the old workers must
    read only their own release's files; the HUP's new workers take the new one."""
    master = main_pid(host, SERVICE)
    running = host.check_output(f"readlink -f {CURRENT}")
    with https_client(https_port, tls) as client:
        version = client.get("/readyz").json()["version"]
    probe, probe_version = f"{running}-probe", f"{version}+probe"
    # A copy of the running release whose installed metadata names another version: a release
    # on disk that differs from what the workers imported only in what a lookup would read.
    metadata = f"{probe}/venv/lib/python3*/site-packages/refapp-*.dist-info/METADATA"
    host.run_test(f"rm -rf {probe} && cp -a {running} {probe}")
    host.run_test(f"sed -i 's/^Version: .*/Version: {probe_version}/' {metadata}")
    try:
        point_current_at(host, probe)
        with https_client(https_port, tls) as client:
            before_hup = {client.get("/readyz").json()["version"] for _ in range(30)}
        reload_and_wait(host, master, SERVICE)
        with https_client(https_port, tls) as client:
            after_hup = {client.get("/readyz").json()["version"] for _ in range(30)}
    finally:
        point_current_at(host, running)
        reload_and_wait(host, master, SERVICE)
        host.run_test(f"rm -rf {probe}")
    assert before_hup == {version}, "a running worker read the release `current` moved to"
    assert after_hup == {probe_version}, "the workers a HUP starts must load the release `current` points at"
    assert main_pid(host, SERVICE) == master


def test_reload_closes_open_websockets_with_1012_and_new_ones_work(
    host: Any, https_port: int, tls: ssl.SSLContext
) -> None:
    """What README promises for open WebSockets: the retiring worker closes them with 1012
    (service restart), through nginx, and a reconnect reaches a new worker."""
    master = main_pid(host, SERVICE)
    with wss_connect(https_port, "/ws", tls) as ws:
        ws.send("before the reload")
        assert ws.recv(timeout=10) == "before the reload"
        reload_and_wait(host, master, SERVICE)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None, "the connection was cut without a close frame"
    assert closed.value.rcvd.code == 1012
    with wss_connect(https_port, "/ws", tls) as ws:
        ws.send("after the reload")
        assert ws.recv(timeout=10) == "after the reload"


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
