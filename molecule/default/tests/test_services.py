"""systemd units, the socket, the worker count, file ownership and hardening."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from asgikit_testing.containers import child_pids, installed_distributions, main_pid, usable_cpus
from asgikit_testing.load import BackgroundLoad
from conftest import (
    CONFIG_DIR,
    CURRENT,
    ENV_FILE,
    GUNICORN_CONF,
    KIT_WORKER,
    SERVICE,
    SOCKET_PATH,
    SOCKET_UNIT,
    VENV,
)

APP_USER = "refapp"


def test_units_are_active_and_enabled(host: Any) -> None:
    for unit in (SERVICE, SOCKET_UNIT, "nginx.service"):
        service = host.service(unit)
        assert service.is_running, f"{unit} is not active"
        assert service.is_enabled, f"{unit} is not enabled"


def test_socket_is_owned_by_app_user_and_open_to_nginx_group_only(host: Any) -> None:
    sock = host.file(SOCKET_PATH)
    assert sock.is_socket
    assert sock.user == APP_USER
    assert sock.group == "www-data"
    assert sock.mode == 0o660


def test_socket_is_listened_on_by_systemd(host: Any) -> None:
    listening = host.check_output(f"systemctl show --property Listen --value {SOCKET_UNIT}")
    assert SOCKET_PATH in listening
    assert host.socket(f"unix://{SOCKET_PATH}").is_listening


def test_socket_outlives_a_service_restart_and_no_request_of_any_method_fails(
    host: Any, mixed_load: Callable[..., BackgroundLoad]
) -> None:
    inode_before = host.check_output(f"stat -c %i {SOCKET_PATH}")
    master_before = main_pid(host, SERVICE)
    load = mixed_load(threads=4, websockets=1, max_seconds=90)
    with load:
        time.sleep(1.0)
        host.run_test(f"systemctl restart {SERVICE}")
        time.sleep(1.0)
    result = load.result
    assert main_pid(host, SERVICE) != master_before
    assert host.check_output(f"stat -c %i {SOCKET_PATH}") == inode_before
    assert host.service(SOCKET_UNIT).is_running
    assert set(result.methods) == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "WS"}
    assert result.failed == 0, result.summary()
    assert result.retried == 0, result.summary()


def test_gunicorn_master_runs_two_per_core_plus_one_workers(host: Any) -> None:
    master = main_pid(host, SERVICE)
    cores = usable_cpus(host, master)
    workers = child_pids(host, master)
    assert len(workers) == 2 * cores + 1, f"{len(workers)} workers for {cores} usable CPUs"
    for pid in workers:
        assert "gunicorn" in host.file(f"/proc/{pid}/cmdline").content_string


def test_gunicorn_conf_uses_uvicorn_worker_and_unix_socket(host: Any) -> None:
    conf = host.file(GUNICORN_CONF).content_string
    assert "worker_class = KIT_WORKER.DrainingUvicornWorker" in conf
    assert "class DrainingUvicornWorker(UvicornWorker)" in host.file(KIT_WORKER).content_string
    assert f'bind = ["unix:{SOCKET_PATH}"]' in conf
    assert "preload_app = False" in conf


def test_venv_holds_the_server_stack_and_exactly_the_pinned_distributions(host: Any) -> None:
    installed = installed_distributions(host, VENV)
    for name, version in {
        "gunicorn": "27.0.1",
        "uvicorn": "0.54.0",
        "uvicorn-worker": "0.4.0",
        "refapp": "1.0.0",
    }.items():
        assert installed.get(name) == version, f"{name} {installed.get(name)}"
    assert {"uvloop", "httptools"} <= set(installed)
    # Every installed distribution is one the release's requirements pin, with hashes.
    pinned = {}
    for line in host.file(f"{CURRENT}/requirements.txt").content_string.splitlines():
        requirement, _, hashes = line.partition(" --hash=sha256:")
        assert hashes, line
        name, _, version = requirement.partition("==")
        pinned[name] = version
    assert {name.lower().replace("_", "-"): v for name, v in installed.items()} == pinned


def test_app_user_cannot_write_code_venv_or_config(host: Any) -> None:
    site_packages = host.check_output(
        f"{VENV}/bin/python -c 'import refapp, os; print(os.path.dirname(refapp.__file__))'"
    )
    for path in (
        f"{VENV}/bin",
        f"{VENV}/bin/python",
        site_packages,
        f"{site_packages}/main.py",
        CONFIG_DIR,
        GUNICORN_CONF,
        KIT_WORKER,
        ENV_FILE,
    ):
        probe = host.run(f"runuser -u {APP_USER} -- test -w {path}")
        assert probe.rc == 1, f"{APP_USER} can write {path}"
        assert host.run(f"test -e {path}").rc == 0, f"{path} does not exist"
    writable = host.check_output(
        f"find /opt/refapp \\( -user {APP_USER} -o -perm -o+w -o -perm -g+w \\) ! -type l -print"
    )
    assert writable == "", f"writable by the app user or others: {writable}"
    # uv's cache (hard-link sources of every venv) is root's alone; uv itself is root's.
    assert host.run(f"runuser -u {APP_USER} -- test -x /opt/asgikit/cache").rc == 1
    uv = host.file("/opt/asgikit/uv-0.13.9/uv")
    assert (uv.user, uv.mode) == ("root", 0o755)


def test_app_user_has_no_login_shell(host: Any) -> None:
    user = host.user(APP_USER)
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert user.group == APP_USER


def test_env_file_is_0640_root_and_app_group_with_settings_and_secrets(host: Any) -> None:
    env_file = host.file(ENV_FILE)
    assert env_file.user == "root"
    assert env_file.group == APP_USER
    assert env_file.mode == 0o640
    content = env_file.content_string
    assert 'REFAPP_GREETING="hello from molecule"' in content
    assert 'REFAPP_SECRET_TOKEN="molecule-secret-canary"' in content


def test_systemd_security_exposure_is_at_most_2(host: Any) -> None:
    report = host.check_output(f"systemd-analyze security {SERVICE}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert match, report
    assert float(match.group(1)) <= 2.0, report


def test_service_unit_settings(host: Any) -> None:
    show = host.check_output(
        f"systemctl show {SERVICE} --property Type,NotifyAccess,Restart,TimeoutStopUSec,ExecReload,KillMode"
    )
    assert "Type=notify" in show
    assert "Restart=on-failure" in show
    assert "KillMode=control-group" in show
    assert "argv[]=/bin/kill -s HUP $MAINPID" in show
    stop_seconds = int(re.search(r"TimeoutStopUSec=(\d+)s", show).group(1))
    graceful = int(
        re.search(r"^graceful_timeout = (\d+)$", host.file(GUNICORN_CONF).content_string, re.M).group(1)
    )
    assert stop_seconds > graceful


def test_access_and_error_logs_reach_the_journal(host: Any, https: httpx.Client) -> None:
    marker = f"journal-probe-{uuid.uuid4().hex}"
    assert https.get(f"/{marker}").status_code == 404
    journal = f"journalctl -u {SERVICE} --no-pager -o cat"
    # The access log (stdout) has the request; the error log (stderr) has worker boots.
    deadline = time.monotonic() + 10
    while host.run(f"{journal} | grep -qF {marker}").rc != 0:
        assert time.monotonic() < deadline, f"{marker} never reached the journal"
        time.sleep(0.5)
    assert host.run(f"{journal} | grep -q 'Booting worker with pid'").rc == 0
