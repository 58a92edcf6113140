"""Facts about the test containers, read from Docker and systemd inside them."""

from __future__ import annotations

import os
import subprocess
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
