"""Facts about the test containers, read from Docker and systemd inside them."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import testinfra


def published_port(container: str, port: int) -> int:
    """The 127.0.0.1 port Docker publishes the container's TCP `port` on."""
    out = subprocess.run(
        ["docker", "port", container, f"{port}/tcp"], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        address, _, host_port = line.strip().rpartition(":")
        if address == "127.0.0.1":
            return int(host_port)
    raise AssertionError(f"{container}: port {port} is not published on 127.0.0.1: {out!r}")


def inventory_name(host: Any) -> str:
    """The testinfra host's inventory name, which is also its container's name."""
    return str(host.ansible.get_variables()["inventory_hostname"])


def main_pid(host: Any, unit: str) -> int:
    pid = int(host.check_output(f"systemctl show --property MainPID --value {unit}"))
    assert pid > 0, f"{unit} has no main process"
    return pid


def child_pids(host: Any, parent: int) -> set[int]:
    out = host.run(f"pgrep -P {parent}").stdout
    return {int(pid) for pid in out.split()}


def wait_for_new_workers(host: Any, master: int, old: set[int], expected: int, seconds: float) -> set[int]:
    """The master's workers once there are `expected` of them and none is in `old`, or as
    they are when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    current = child_pids(host, master)
    while time.monotonic() < deadline:
        if len(current) == expected and not current & old:
            break
        time.sleep(0.5)
        current = child_pids(host, master)
    return current


def reload_and_wait(host: Any, master: int, unit: str) -> set[int]:
    """`systemctl reload` (a HUP), then the workers once all of them are new (40 s at most)."""
    old = child_pids(host, master)
    host.run_test(f"systemctl reload {unit}")
    return wait_for_new_workers(host, master, old, len(old), seconds=40)


@contextmanager
def low_max_requests(host: Any, master: int, unit: str, conf: str) -> Iterator[set[int]]:
    """Within: gunicorn_conf.py `conf` says max_requests 300 (+ up to 150 jitter, the
    production proportion) instead of the kit's 10,000 (+1,000), live through a HUP; yields
    the workers started with it. Afterwards the file is put back and live again."""
    original = host.file(conf).content_string
    assert "\nmax_requests = 10000\nmax_requests_jitter = 1000\n" in original
    host.run_test(
        f"sed -i -e 's/^max_requests = 10000$/max_requests = 300/' "
        f"-e 's/^max_requests_jitter = 1000$/max_requests_jitter = 150/' {conf}"
    )
    try:
        old = child_pids(host, master)
        started = reload_and_wait(host, master, unit)
        assert len(started) == len(old), "the reload did not start every worker again"
        assert not started & old, "the reload did not replace the workers"
        yield started
    finally:
        encoded = base64.b64encode(original.encode()).decode()
        host.run_test(f"echo {encoded} | base64 -d > {conf}")
        reload_and_wait(host, master, unit)


def usable_cpus(host: Any, pid: int) -> int:
    """CPUs `pid` may run on (its affinity), as gunicorn_conf.py counts them."""
    return int(host.check_output(f"python3 -c 'import os; print(len(os.sched_getaffinity({pid})))'"))


def installed_distributions(host: Any, venv: str) -> dict[str, str]:
    """name -> version of every distribution in `venv` (uv makes venvs without pip)."""
    out = host.check_output(
        f"{venv}/bin/python -c 'import importlib.metadata as m; "
        'print(*sorted(f"{d.name}=={d.version}" for d in m.distributions()))\''
    )
    return dict(item.split("==", 1) for item in out.split())


def scenario_hosts(*names: str) -> dict[str, Any]:
    """testinfra hosts for the running Molecule scenario's containers, by inventory name."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in names}
