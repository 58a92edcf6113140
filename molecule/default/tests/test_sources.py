"""Every source form goes live through site.yml (a uv workspace member whose lock sits at the
workspace root, a requirements lock with hashes, a pylock.toml, a git ref), on the Debian 12 host
(artifacts for both platforms are built and deployed in every scenario, from the wheel source),
and every bad source is refused, named, before anything on either host changes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra

from asgikit_testing.clients import https_client, tls_context
from asgikit_testing.containers import main_pid, published_port
from asgikit_testing.playbooks import recap
from asgikit_testing.projects import (
    PROJECT_FILE,
    git_repository,
    pylock_project,
    requirements_project,
    tamper_hashes,
    uv_workspace,
)
from conftest import CERTIFICATE, CURRENT, ENV_FILE, GUNICORN_CONF, REPO, SERVICE, run_site

HOSTS = ("asgikit-debian12", "asgikit-debian13")
V1_WHEEL = REPO / "app/dist/refapp-1.0.0-py3-none-any.whl"

SOURCES: dict[str, Callable[[Path, str], str]] = {
    "uv-workspace-member": lambda tmp, version: str(uv_workspace(tmp / "ws", version)),
    "requirements-lock": lambda tmp, version: str(requirements_project(tmp / "req", version)),
    "pylock": lambda tmp, version: str(pylock_project(tmp / "pylock", version)),
    "git-ref": lambda tmp, version: git_repository(tmp / "repo", version, f"v{version}"),
}


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Any]]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    yield {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in HOSTS}
    # Leave the host on the scenario's own release for the tests that follow.
    result = run_site(HOSTS[0], "-e", f"asgi_app_source={V1_WHEEL}")
    assert result.returncode == 0, result.stdout[-3000:]


def served_version(host: Any, name: str, path: str = "/readyz") -> str:
    with https_client(
        published_port(name, 443), tls_context(host.file(CERTIFICATE).content_string)
    ) as client:
        return str(client.get(path).json()["version"])


@pytest.mark.parametrize(("form", "version"), [(f, f"1.{i}.0") for i, f in enumerate(SOURCES, start=1)])
def test_each_source_form_goes_live(hosts: dict[str, Any], tmp_path: Path, form: str, version: str) -> None:
    source = SOURCES[form](tmp_path, version)
    result = run_site(HOSTS[0], "-e", f"asgi_app_source={source}")
    assert result.returncode == 0, result.stdout[-4000:]
    for name, host in list(hosts.items())[:1]:
        assert served_version(host, name) == version, name
        release = host.file(CURRENT).linked_to
        manifest = json.loads(host.file(f"{release}/release.json").content_string)
        assert manifest["version"] == version
        assert manifest["lock"]["kind"] == {"requirements-lock": "requirements", "pylock": "pylock"}.get(
            form, "uv"
        )
        # The project's files came along, root-owned, and every worker runs in its release's copy.
        carried = host.file(f"{release}/project/{PROJECT_FILE}")
        assert version in carried.content_string, name
        assert (carried.user, carried.group) == ("root", "root")
        # (Read as the app user: root in a container may not read another user's /proc/PID/cwd.)
        for pid in host.check_output(f"pgrep -P {main_pid(host, SERVICE)}").split():
            cwd = host.check_output(f"runuser -u refapp -- readlink /proc/{pid}/cwd")
            assert cwd == f"{release}/project", name


def _fingerprint(host: Any) -> dict[str, str]:
    paths = (ENV_FILE, GUNICORN_CONF, f"{CURRENT}/release.json")
    state = {path: host.file(path).sha256sum for path in paths}
    state["current"] = host.file(CURRENT).linked_to
    state["releases"] = host.check_output("ls /opt/refapp/releases")
    return state


def _no_lock(tmp: Path) -> str:
    directory = requirements_project(tmp / "nolock", "1.9.0")
    (directory / "requirements.txt").unlink()
    return str(directory)


def _stale_uv_lock(tmp: Path) -> str:
    member = uv_workspace(tmp / "stale", "1.9.0")
    pyproject = member / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"fastapi==0.165.0"', '"fastapi==0.165.0", "idna"'))
    return str(member)


def _hash_mismatch(tmp: Path) -> str:
    directory = requirements_project(tmp / "tampered", "1.9.0")
    tamper_hashes(directory / "requirements.txt", "idna")
    return str(directory)


def _python_excluded(tmp: Path) -> str:
    directory = requirements_project(tmp / "py", "1.9.0")
    pyproject = directory / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.14"')
    )
    return str(directory)


BAD_SOURCES: dict[str, tuple[Callable[[Path], str], str]] = {
    "none-of-the-forms": (
        lambda tmp: "svn+https://svn.example.com/shop/trunk",
        "is none of the source forms",
    ),
    "no-lock": (_no_lock, "has no lock"),
    "stale-lock": (_stale_uv_lock, "is out of date"),
    "hash-mismatch": (_hash_mismatch, "does not match the hash"),
    "python-excluded": (_python_excluded, "requires Python >=3.14"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_bad_source_is_refused_by_name_before_any_change(
    hosts: dict[str, Any], tmp_path: Path, case: str
) -> None:
    make, expected = BAD_SOURCES[case]
    before = {name: _fingerprint(host) for name, host in hosts.items()}
    result = run_site(None, "-e", f"asgi_app_source={make(tmp_path)}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "asgi_app_source" in output
    assert expected in output, output[-3000:]
    for name, host in hosts.items():
        assert recap(result.stdout, name)["changed"] == 0, name
        assert _fingerprint(host) == before[name], name
