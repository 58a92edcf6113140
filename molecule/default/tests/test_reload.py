"""`systemctl reload` is a HUP: running workers keep their release while new ones take the
new one, and open WebSockets are closed with 1012 (test_reload_under_load.py: reloads and
recycled workers under the mixed load)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from asgikit_testing.clients import https_client, wss_connect
from asgikit_testing.containers import main_pid, reload_and_wait
from conftest import CURRENT, SERVICE


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
