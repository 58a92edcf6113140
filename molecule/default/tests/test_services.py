"""systemd units, the socket, the worker count, file ownership and hardening."""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import httpx

from asgikit_testing.containers import (
    child_pids,
    installed_distributions,
    main_pid,
    reload_and_wait,
    usable_cpus,
)
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


# Modules the service imports, or Python looks for at every start: planted by the app user
# in every directory it can write, none of them may ever run.
PLANTED_MODULES = (
    "gunicorn",
    "uvicorn",
    "uvicorn_worker",
    "asgikit_worker",
    "gunicorn_conf",
    "refapp",
    "fastapi",
    "starlette",
    "sitecustomize",
    "usercustomize",
)
PLANTED_MARKER = f"/var/lib/{APP_USER}/planted-code-ran"


def test_code_the_app_user_plants_never_runs_in_the_service(host: Any, https: httpx.Client) -> None:
    """A compromised app writes modules wherever it can (its state directory, its user site,
    the runtime directory, temporary directories): after a restart and a reload, none of them
    ran, since nothing the app user can write is on the service's sys.path."""
    as_app = f"runuser -u {APP_USER} --"
    python = host.check_output(f"readlink -f {VENV}/bin/python").rsplit("/", 1)[-1]
    user_site = f"/var/lib/{APP_USER}/.local/lib/{python}/site-packages"
    host.run_test(f"{as_app} mkdir -p {user_site}")
    found = host.check_output(f"{as_app} find / /run /dev/shm -xdev -type d -writable 2>/dev/null || true")
    writable = sorted(set(found.split()) - {"/proc", "/sys"})
    assert f"/var/lib/{APP_USER}" in writable, writable
    assert user_site in writable, writable
    payload = f"open({PLANTED_MARKER!r}, 'a').write(__file__ + '\\n')"
    plant = " ; ".join(
        f"printf '%s\\n' \"{payload}\" > {directory}/{module}.py"
        for directory in writable
        for module in PLANTED_MODULES
    )
    host.run_test(f"{as_app} sh -c {shlex.quote(plant)}")
    host.run_test(f"{as_app} sh -c 'echo \"import {PLANTED_MODULES[0]}\" > {user_site}/planted.pth'")
    try:
        master = main_pid(host, SERVICE)
        host.run_test(f"systemctl restart {SERVICE}")
        assert https.get("/readyz").status_code == 200
        reload_and_wait(host, main_pid(host, SERVICE), SERVICE)
        for path in ("/", "/runtime", "/readyz"):
            assert https.get(path).status_code == 200
        assert main_pid(host, SERVICE) != master
        assert not host.file(PLANTED_MARKER).exists, host.file(PLANTED_MARKER).content_string
        # Nor is any file the service runs or maps, nor its working directory, writable by it.
        pids = [main_pid(host, SERVICE), *child_pids(host, main_pid(host, SERVICE))]
        paths = host.check_output(
            "for p in " + " ".join(map(str, pids)) + "; do readlink /proc/$p/exe /proc/$p/cwd;"
            " awk '$6 ~ /^\\// {print $6}' /proc/$p/maps; done | sort -u"
        ).split()
        assert any(path.endswith(".so") for path in paths), paths
        reachable = {
            str(PurePosixPath(path).parents[i])
            for path in paths
            for i in range(len(PurePosixPath(path).parts) - 1)
        }
        candidates = " ".join(shlex.quote(path) for path in sorted(set(paths) | reachable))
        writable_by_app = host.check_output(
            f'for p in {candidates}; do {as_app} test -w "$p" && echo "$p"; done; true'
        )
        assert writable_by_app == "", f"the app user can write what the service runs: {writable_by_app}"
    finally:
        host.run(f"rm -f {PLANTED_MARKER} {user_site}/planted.pth")
        for directory in writable:
            host.run("rm -f " + " ".join(f"{directory}/{module}.py" for module in PLANTED_MODULES))


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


def test_systemd_security_exposure_is_at_most_2(host: Any, record_property: Any) -> None:
    report = host.check_output(f"systemd-analyze security {SERVICE}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert match, report
    record_property("figure", f"systemd-analyze security {SERVICE}: {match.group(1)}")
    assert float(match.group(1)) <= 2.0, report


def test_service_unit_settings(host: Any) -> None:
    show = host.check_output(
        f"systemctl show {SERVICE} --property Type,NotifyAccess,Restart,TimeoutStopUSec,ExecReload,KillMode"
    )
    assert "Type=notify" in show
    assert "Restart=on-failure" in show
    assert "KillMode=control-group" in show
    assert "argv[]=/bin/kill -s HUP $MAINPID" in show
    # Limits: memory for the master and its workers together (80% of the host's), a killed
    # process replaced by the master rather than the service stopped, processes and threads.
    limits = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {SERVICE} --property MemoryMax,OOMPolicy,TasksMax"
        ).split()
    )
    total = 1024 * int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    assert 0.79 * total <= int(limits["MemoryMax"]) <= 0.81 * total, (limits, total)
    assert limits["OOMPolicy"] == "continue"
    assert limits["TasksMax"] == "4096"
    stop_seconds = int(re.search(r"TimeoutStopUSec=(\d+)s", show).group(1))
    graceful = int(
        re.search(r"^graceful_timeout = (\d+)$", host.file(GUNICORN_CONF).content_string, re.M).group(1)
    )
    assert stop_seconds > graceful


def test_the_service_logs_to_the_journal_with_its_own_rate_limit_and_nginx_logs_requests(
    host: Any, https: httpx.Client
) -> None:
    marker = f"journal-probe-{uuid.uuid4().hex}"
    assert https.get(f"/{marker}").status_code == 404
    # nginx logs the request (its buffer is written every second); gunicorn does not.
    deadline = time.monotonic() + 10
    while host.run(f"grep -qF {marker} /var/log/nginx/refapp.access.log").rc != 0:
        assert time.monotonic() < deadline, f"{marker} never reached nginx's access log"
        time.sleep(0.5)
    journal = f"journalctl -u {SERVICE} --no-pager -o cat"
    assert host.run(f"{journal} | grep -qF {marker}").rc == 1, "gunicorn logged the request too"
    # The error log (stderr) has the worker boots.
    assert host.run(f"{journal} | grep -q 'Booting worker with pid'").rc == 0
    limits = host.check_output(
        f"systemctl show {SERVICE} --property LogRateLimitIntervalUSec,LogRateLimitBurst"
    ).split()
    assert sorted(limits) == ["LogRateLimitBurst=100000", "LogRateLimitIntervalUSec=30s"]
