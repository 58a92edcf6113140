"""`systemctl reload` is a HUP: the master stays, every worker is replaced, nothing fails."""

from __future__ import annotations

import ssl
import time
from typing import Any

from asgikit_testing.clients import https_client
from asgikit_testing.containers import child_pids, main_pid, usable_cpus
from asgikit_testing.load import BackgroundLoad
from conftest import SERVICE


def wait_for_new_workers(host: Any, master: int, old: set[int], expected: int, seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    current = child_pids(host, master)
    while time.monotonic() < deadline:
        if len(current) == expected and not current & old:
            break
        time.sleep(0.2)
        current = child_pids(host, master)
    return current


def test_systemctl_reload_keeps_serving_and_replaces_every_worker(
    host: Any, https_port: int, tls: ssl.SSLContext
) -> None:
    master = main_pid(host, SERVICE)
    expected = 2 * usable_cpus(host, master) + 1
    old = child_pids(host, master)
    assert len(old) == expected

    with BackgroundLoad(lambda: https_client(https_port, tls), "/healthz", threads=4, max_seconds=90) as load:
        time.sleep(1.0)
        before = load.result.total
        host.run_test(f"systemctl reload {SERVICE}")
        new = wait_for_new_workers(host, master, old, expected, seconds=40)
        time.sleep(1.0)  # keep the load on the new workers for a moment
    result = load.result

    assert main_pid(host, SERVICE) == master, "reload must not replace the master"
    assert len(new) == expected, f"{len(new)} workers after reload, expected {expected}"
    assert not new & old, f"workers not replaced: {sorted(new & old)}"
    assert before > 0, "no load before the reload"
    assert result.total > before, "the load did not run across the reload"
    assert result.failed == 0, f"failed requests during reload: {dict(result.errors)} {dict(result.statuses)}"
