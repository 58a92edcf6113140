"""A real app goes live and changes schema: examples/notes on PostgreSQL, its migrations run as
a release command, its settings required at import, a health check without a version."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from asgikit_testing.load import Call, measure, report_rows
from asgikit_testing.notes import notes_release
from conftest import APP_HOSTS, BALANCER, CURRENT, SECRETS, client_for, run_playbook

SITE_PACKAGES = f"{CURRENT}/venv/lib/python3.11/site-packages"


def alembic_current() -> str:
    result = run_playbook("exec", "-e", 'asgi_app_exec="alembic current"')
    assert result.returncode == 0, result.output[-3000:]
    assert not any(secret in result.output for secret in SECRETS)
    return result.output


@pytest.fixture(scope="module")
def note(through_balancer: Callable[[], httpx.Client]) -> dict[str, Any]:
    with through_balancer() as client:
        created = client.post("/notes", json={"text": "written before any deploy"})
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_the_api_creates_and_reads_back_over_https_on_every_host(note: dict[str, Any]) -> None:
    assert note["text"] == "written before any deploy"
    for name in APP_HOSTS:
        with client_for(name)() as client:
            assert client.get(f"/notes/{note['id']}").json()["text"] == note["text"], name
            assert client.get("/health").json() is True, name


def test_the_migration_ran_once_as_a_release_command_and_its_log_masks_secrets(
    app_hosts: dict[str, Any],
) -> None:
    assert "0001 (head)" in alembic_current()
    logs = {name: host.file(f"{CURRENT}/commands.jsonl") for name, host in app_hosts.items()}
    # Once per deploy: on the play's first host only.
    assert logs[APP_HOSTS[0]].exists
    assert not logs[APP_HOSTS[1]].exists
    entry = json.loads(logs[APP_HOSTS[0]].content_string.splitlines()[0])
    assert (entry["name"], entry["command"], int(entry["rc"])) == (
        "migrate the database",
        "alembic upgrade head",
        0,
    )
    assert "Running upgrade  -> 0001" in entry["output"]
    assert (logs[APP_HOSTS[0]].user, logs[APP_HOSTS[0]].mode) == ("root", 0o640)
    assert not any(secret in logs[APP_HOSTS[0]].content_string for secret in SECRETS)


def test_the_app_needs_its_settings_to_import_so_the_checks_ran_with_them(app_hosts: dict[str, Any]) -> None:
    for name, host in app_hosts.items():
        bare = host.run(f"{CURRENT}/venv/bin/python -P -c 'import notes.main'")
        assert bare.rc != 0, name
        assert "validation error" in bare.stderr, name
        assert host.service("notes").is_running, name


def test_two_hosts_of_one_release_hold_the_same_distributions_hashes_included(
    app_hosts: dict[str, Any],
) -> None:
    digests = {}
    for name, host in app_hosts.items():
        release = host.file(CURRENT).linked_to
        # Every installed file's sha256, bytecode aside; uv's bookkeeping of when it installed
        # (uv_cache.json, and its line in RECORD) is the one thing that differs by host.
        files = host.check_output(
            f"cd {SITE_PACKAGES} && "
            "find . -type f ! -name '*.pyc' ! -name uv_cache.json ! -name RECORD -print0"
            " | sort -z | xargs -0 sha256sum"
            " && for record in $(find . -name RECORD | sort); do"
            " printf '%s ' $record; grep -v '/uv_cache.json,' $record | sha256sum; done"
        )
        digests[name] = (release.rsplit("/", 1)[1], host.file(f"{CURRENT}/requirements.txt").sha256sum, files)
        assert files.count("\n") > 500, name
        for package in ("psycopg", "sqlalchemy", "alembic", "uvloop"):
            assert f"./{package}/" in files, f"{name}: {package}"
    first, second = digests.values()
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]


def test_v2_with_an_expanding_migration_rolls_out_under_load_with_no_failed_request(
    app_hosts: dict[str, Any],
    note: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Callable[..., None],
) -> None:
    v2 = notes_release(tmp_path_factory.mktemp("notes"), "2.0.0")
    run, result = measure(
        client_for(BALANCER),
        lambda: run_playbook("deploy", "-e", f"asgi_app_source={v2}"),
        mix=[Call("GET", f"/notes/{note['id']}")],
        threads=4,
        min_requests=3000,
    )
    print("\n" + "\n".join(report_rows(run.phases())))
    operation = run.operation
    record_property(
        "load", operation.record("notes v2 rolling deploy with a migration, through the balancer")
    )
    record_property(
        "figure",
        f"notes v2 rolling deploy with a migration, through the balancer: {operation.total} requests, "
        f"{operation.failed} failed, p99 {operation.percentile(99):.0f} ms, {run.seconds['operation']:.0f} s",
    )
    assert result.returncode == 0, result.output[-3000:]
    assert run.operation.total >= 3000
    assert run.operation.failed == 0, f"{run.operation.errors} {run.operation.statuses}"
    assert not any(secret in result.output for secret in SECRETS)
    assert "0002 (head)" in alembic_current()
    for name in APP_HOSTS:
        with client_for(name)() as client:
            body = client.get(f"/notes/{note['id']}").json()
            assert body["tags"] is None, name
            created = client.post("/notes", json={"text": "v2", "tags": "deploy"})
            assert created.json()["tags"] == "deploy", name


def test_a_failing_migration_stops_the_deploy_and_leaves_v2_serving_untouched(
    app_hosts: dict[str, Any], note: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    before = {name: host.file(CURRENT).linked_to for name, host in app_hosts.items()}
    masters = {
        name: host.check_output("systemctl show -p MainPID --value notes") for name, host in app_hosts.items()
    }
    v3 = notes_release(tmp_path_factory.mktemp("notes"), "3.0.0")
    result = run_playbook("deploy", "-e", f"asgi_app_source={v3}")
    assert result.returncode != 0
    assert "Release command 'migrate the database' (alembic upgrade head) failed" in result.output
    assert "no_such_column" in result.output
    assert "The running release was not touched." in result.output
    assert not any(secret in result.output for secret in SECRETS)
    for name, host in app_hosts.items():
        assert host.file(CURRENT).linked_to == before[name], name
        assert host.check_output("systemctl show -p MainPID --value notes") == masters[name], name
        with client_for(name)() as client:
            assert "tags" in client.get(f"/notes/{note['id']}").json(), name
    # PostgreSQL rolled the failed migration back whole.
    assert "0002 (head)" in alembic_current()


def test_exec_runs_as_the_app_user_whatever_its_command_starts_with(app_hosts: dict[str, Any]) -> None:
    """The command comes after systemd-run's options, behind '--': one that starts with an
    option of systemd-run's own (here, another user) is a command name, not an option."""
    app_uid = app_hosts[APP_HOSTS[0]].user("notes").uid
    result = run_playbook("exec", "-e", 'asgi_app_exec="/usr/bin/id -u"')
    assert result.returncode == 0, result.output[-3000:]
    assert f'"{app_uid}"' in result.output or f"\n{app_uid}\n" in result.output, result.output[-3000:]
    smuggled = run_playbook("exec", "-e", 'asgi_app_exec="--uid=0 /usr/bin/id -u"')
    assert smuggled.returncode != 0, smuggled.output[-3000:]
    assert "--uid=0" in smuggled.output
    assert '"0"' not in smuggled.output
    assert "\n0\n" not in smuggled.output
