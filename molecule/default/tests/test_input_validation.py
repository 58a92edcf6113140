"""Bad input is refused, with the variable named, before anything on the host changes;
a configuration nginx rejects leaves the previous one serving; secrets stay out of logs.
On the Debian 13 host (the test of one bad host among two uses both)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import testinfra

from asgikit_testing.playbooks import recap
from conftest import ENV_FILE, GUNICORN_CONF, NGINX_SITE, run_site

HOSTS = ("asgikit-debian13", "asgikit-debian12")


def _scenario_host(name: str) -> Any:
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory))


@pytest.fixture(scope="module")
def host() -> Any:
    """What this module checks happens in Ansible, on the controller, before anything
    reaches a host (and nginx -t is the same check on both): its tests run on the Debian 13
    host alone, instead of testinfra's every host."""
    return _scenario_host(HOSTS[0])


def _system_fingerprint(host: Any) -> str:
    """What a bad name or path would change first: the accounts, and the system's directories."""
    return host.check_output(
        "getent passwd root www-data systemd-network; getent group root systemd-journal;"
        " stat -c '%n %U %G %a' / /etc /opt /var/lib /run"
    )


def _fingerprint(host: Any) -> dict[str, str]:
    paths = (ENV_FILE, GUNICORN_CONF, NGINX_SITE, "/etc/nginx/nginx.conf")
    return {path: host.check_output(f"stat -c '%Y %s' {path}") + host.file(path).sha256sum for path in paths}


@pytest.mark.parametrize(
    ("extra_vars", "expected"),
    [
        pytest.param('{"gunicorn_workers": "many"}', "gunicorn_workers", id="wrong-type"),
        pytest.param('{"asgi_app_env": ["not", "a", "dict"]}', "asgi_app_env", id="wrong-type-dict"),
        pytest.param('{"nginx_tls_mode": "letsencrypt"}', "nginx_tls_mode", id="not-among-choices"),
        pytest.param('{"gunicorn_loglevel": "verbose"}', "gunicorn_loglevel", id="not-among-choices-2"),
    ],
)
def test_malformed_variable_fails_validation_before_any_change(
    host: Any, container: str, extra_vars: str, expected: str
) -> None:
    before = _fingerprint(host)
    result = run_site(container, "--extra-vars", extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Validating arguments against arg spec 'validate'" in output
    # The errors alone, not the spec that the failure also prints (it names every option).
    errors = re.search(r'"argument_errors": \[(.*?)\]', output, re.S)
    assert errors is not None, output[-3000:]
    assert expected in errors.group(1), errors.group(1)
    counters = recap(result.stdout, container)
    assert counters["changed"] == 0
    assert counters["failed"] == 1
    assert _fingerprint(host) == before


# Values of the right type that would take over the system's accounts or directories, or
# let another local user reach the app: each is refused by the checks that run before any
# task changes a host, with the variable named.
REFUSED = [
    pytest.param({"asgi_app_name": "../etc"}, "asgi_app_name must be", id="name-escapes-its-directories"),
    pytest.param({"asgi_app_user": "root"}, "asgi_app_user must be", id="user-root"),
    pytest.param({"asgi_app_user": "www-data"}, "asgi_app_user must be", id="user-nginx"),
    pytest.param({"asgi_app_group": "root"}, "asgi_app_group must be", id="group-root"),
    pytest.param(
        {"asgi_app_user": "systemd-network"},
        "asgi_app_user 'systemd-network' or",
        id="user-of-another-service",
    ),
    pytest.param(
        {"asgi_app_group": "systemd-journal"}, "or asgi_app_group 'systemd-journal'", id="group-in-use"
    ),
    pytest.param({"asgi_app_base_dir": "/"}, "asgi_app_base_dir must be", id="base-dir-root"),
    pytest.param(
        {"asgi_app_base_dir": "/opt/refapp/../../etc"}, "asgi_app_base_dir must be", id="base-dir-dotdot"
    ),
    pytest.param(
        {"asgi_app_config_dir": "/etc"}, "asgi_app_config_dir ('/etc') must be", id="config-dir-etc"
    ),
    pytest.param(
        {"asgi_app_base_dir": "/var/lib/refapp/code"}, "asgi_app_base_dir must be", id="base-dir-app-writable"
    ),
    pytest.param(
        {"asgi_app_tools_dir": "/opt/refapp/tools"}, "must be a directory of its own", id="nested-dirs"
    ),
    pytest.param(
        {"asgi_app_env_file": "/etc/shadow"}, "asgi_app_env_file ('/etc/shadow') must be", id="env-file"
    ),
    pytest.param({"asgi_app_python": "/tmp/python3"}, "asgi_app_python must be", id="python-in-tmp"),
    pytest.param(
        {"asgi_app_env": {"PYTHONPATH": "/var/lib/refapp"}}, "Offending: ['PYTHONPATH']", id="env-pythonpath"
    ),
    pytest.param(
        {"asgi_app_secrets": {"LD_PRELOAD": "/var/lib/refapp/x.so"}}, "Offending: ['LD_PRELOAD']", id="env-ld"
    ),
    pytest.param({"gunicorn_socket_mode": "0666"}, "gunicorn_socket_mode must be", id="socket-mode-others"),
    pytest.param(
        {"gunicorn_socket_path": "/run/../etc/x"}, "gunicorn_socket_path must be", id="socket-path-dotdot"
    ),
    # Strings that would end an nginx directive, open a block or expand a variable.
    pytest.param(
        {"nginx_client_max_body_size": "1m; add_header X y"},
        "nginx_client_max_body_size must be",
        id="nginx-body-size-directive",
    ),
    pytest.param(
        {"nginx_security_headers": {"X-A": 'a" always; add_header Y "b'}},
        "nginx_security_headers: names must be",
        id="nginx-header-value-quote",
    ),
    pytest.param(
        {"nginx_security_headers": {"X-A": "$request_uri"}},
        "nginx_security_headers: names must be",
        id="nginx-header-value-variable",
    ),
    pytest.param(
        {"nginx_websocket_locations": ["/ws { return 200; } location /x"]},
        "nginx_websocket_locations: each entry",
        id="nginx-location-block",
    ),
    pytest.param(
        {"nginx_tls_ciphers": "HIGH; ssl_protocols TLSv1"}, "nginx_tls_ciphers must be", id="nginx-ciphers"
    ),
    pytest.param({"nginx_user": "root"}, "nginx_user must be", id="nginx-user-root"),
    pytest.param(
        {"nginx_server_names": ["localhost\n"]}, "nginx_server_names must list", id="nginx-name-newline"
    ),
]


@pytest.fixture(scope="module")
def refused_runs() -> dict[str, tuple[subprocess.CompletedProcess[str], bool]]:
    """Runs site.yml once per REFUSED value, on one host (the checks do not depend on the
    distribution), three at a time, since each run waits on the host more than it computes.
    Maps each value's id to its run, and whether the host and its system were the same
    after every run as before the first."""
    host = _scenario_host(HOSTS[0])
    before = (_fingerprint(host), _system_fingerprint(host))
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            case.id: pool.submit(run_site, HOSTS[0], "--extra-vars", json.dumps(case.values[0]))
            for case in REFUSED
        }
        runs = {case_id: future.result() for case_id, future in futures.items()}
    unchanged = (_fingerprint(host), _system_fingerprint(host)) == before
    return {case_id: (run, unchanged) for case_id, run in runs.items()}


@pytest.mark.parametrize(("extra_vars", "expected"), REFUSED)
def test_value_that_takes_over_the_system_is_refused_before_any_change(
    refused_runs: dict[str, tuple[subprocess.CompletedProcess[str], bool]],
    request: pytest.FixtureRequest,
    extra_vars: dict[str, Any],
    expected: str,
) -> None:
    result, unchanged = refused_runs[request.node.callspec.id]
    output = result.stdout + result.stderr
    assert result.returncode != 0, (extra_vars, output[-3000:])
    assert expected in output, (extra_vars, output[-3000:])
    counters = recap(result.stdout, HOSTS[0])
    assert counters["changed"] == 0
    assert counters["failed"] == 1
    assert "Take the host's lock" not in output
    assert unchanged, "a refused value changed the host, its accounts or the system's directories"


def test_one_host_with_a_bad_value_stops_every_host_before_any_change(tmp_path: Path) -> None:
    """any_errors_fatal: the other host's input is fine, yet nothing runs there either."""
    scenario_inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    hosts = {name: _scenario_host(name) for name in HOSTS}
    bad, good = HOSTS
    inventory = tmp_path / "bad_host.yml"
    inventory.write_text(f"app_servers:\n  hosts:\n    {bad}:\n      asgi_app_user: root\n")
    before = {name: _fingerprint(host) for name, host in hosts.items()}
    result = run_site(None, "-i", str(inventory), inventory=scenario_inventory)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "asgi_app_user must be" in output
    assert recap(result.stdout, bad)["failed"] == 1
    assert recap(result.stdout, good) == {**recap(result.stdout, good), "changed": 0, "failed": 0}
    assert "Take the host's lock" not in output
    assert {name: _fingerprint(host) for name, host in hosts.items()} == before


def test_missing_required_variable_is_named_before_any_change(
    host: Any, container: str, tmp_path: Path
) -> None:
    # An inventory with the host but none of the scenario's group_vars: no asgi_app_source.
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        f"app_servers:\n  hosts:\n    {container}:\n      ansible_connection: community.docker.docker\n"
    )
    before = _fingerprint(host)
    result = run_site(container, inventory=inventory)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "missing required arguments: asgi_app_source" in output
    assert recap(result.stdout, container)["changed"] == 0
    assert _fingerprint(host) == before


def test_config_rejected_by_nginx_leaves_previous_one_serving(
    host: Any, container: str, https: httpx.Client
) -> None:
    site_before = host.file(NGINX_SITE).sha256sum
    # A value of the right form that nginx itself refuses: a size beyond what it can hold.
    result = run_site(container, "--extra-vars", '{"nginx_client_max_body_size": "99999999999999999999m"}')
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nginx rejected the new configuration" in output
    assert "client_max_body_size" in output
    assert host.file(NGINX_SITE).sha256sum == site_before
    assert host.run("ls /etc/nginx/sites-available/ | grep -c '~$'").stdout.strip() == "0"
    assert host.run_test("nginx -t").rc == 0
    assert https.get("/healthz").status_code == 200


def test_secrets_never_appear_in_ansible_output(host: Any, container: str) -> None:
    # Check mode with --diff: the env file would change, yet its content must not be shown.
    result = run_site(
        container,
        "--check",
        "--diff",
        "-v",
        "--extra-vars",
        '{"asgi_app_secrets": {"REFAPP_SECRET_TOKEN": "changed-canary-value"}}',
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "changed-canary-value" not in output
    assert "molecule-secret-canary" not in output
    assert "the output has been hidden" in output
    assert "molecule-secret-canary" in host.file(ENV_FILE).content_string  # check mode changed nothing
