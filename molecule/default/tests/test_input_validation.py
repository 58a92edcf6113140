"""Bad input is refused, with the variable named, before anything on the host changes;
a configuration nginx rejects leaves the previous one serving; secrets stay out of logs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.playbooks import recap
from conftest import ENV_FILE, GUNICORN_CONF, NGINX_SITE, run_site


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
    # A value of the right type that nginx itself refuses.
    result = run_site(container, "--extra-vars", '{"nginx_client_max_body_size": "10 megabytes"}')
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
