"""inventories/example: its secrets are encrypted in the repository, open with the vault
password README gives for the example, and reach the variables that use them; a copy passes
every check site.yml makes before it changes anything, and the checks catch a balancer that
would pass on what the app hosts refuse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asgikit_testing.certificates import make_certificate
from asgikit_testing.playbooks import recap

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventories" / "example"
VAULT = EXAMPLE / "group_vars" / "app_servers" / "vault.yml"
# The example's vault password, given in README; a real inventory has its own.
PASSWORD = "asgikit-example"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault_pass"
    path.write_text(PASSWORD + "\n")
    return path


def ansible(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs an Ansible command from the repository (its ansible.cfg), without colour and
    without the caller's ANSIBLE_* settings (make exports ANSIBLE_FORCE_COLOR)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(
        list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def view(vault: Path, password_file: Path) -> subprocess.CompletedProcess[str]:
    return ansible("ansible-vault", "view", "--vault-password-file", str(password_file), str(vault))


def test_the_secrets_file_is_encrypted() -> None:
    text = VAULT.read_text()
    assert text.startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert "vault_database_password" not in text


def test_the_secrets_reach_the_app_settings(password_file: Path) -> None:
    result = ansible(
        "ansible", "-i", str(EXAMPLE), "app1.example.com", "-m", "ansible.builtin.debug",
        "-a", "var=asgi_app_secrets", "--vault-password-file", str(password_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    secrets = json.loads(result.stdout.split("=>", 1)[1])["asgi_app_secrets"]
    assert secrets["DATABASE_URL"] == "postgresql://shop:example-database-password@db.internal/shop"
    assert secrets["SESSION_SECRET"] == "example-session-secret-change-me"


def test_without_the_password_ansible_refuses_to_read_them() -> None:
    result = ansible("ansible-inventory", "-i", str(EXAMPLE), "--list")
    assert result.returncode != 0
    assert "vault" in (result.stdout + result.stderr).lower()


def test_site_yml_parses_with_the_example(password_file: Path) -> None:
    result = ansible(
        "ansible-playbook", "-i", str(EXAMPLE), "site.yml", "--syntax-check",
        "--vault-password-file", str(password_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_groups_are_the_ones_site_yml_plays_on(password_file: Path) -> None:
    result = ansible(
        "ansible-inventory", "-i", str(EXAMPLE), "--list", "--vault-password-file", str(password_file)
    )
    groups = json.loads(result.stdout)
    assert groups["app_servers"]["hosts"] == ["app1.example.com", "app2.example.com", "app3.example.com"]
    assert groups["load_balancers"]["hosts"] == ["lb1.example.com"]


def test_a_new_inventory_gets_a_vault_of_its_own(tmp_path: Path) -> None:
    """scripts/new-inventory.sh copies the example without its vault, whose password README
    prints: the copy's vault holds the same names, with random values, under a new password."""
    dest, new_password = tmp_path / "production", tmp_path / "vault_pass"
    made = ansible(str(REPO / "scripts/new-inventory.sh"), str(dest), str(new_password))
    assert made.returncode == 0, made.stdout + made.stderr
    assert new_password.stat().st_mode & 0o777 == 0o600
    vault = dest / "group_vars" / "app_servers" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    example_password = tmp_path / "example_pass"
    example_password.write_text(PASSWORD + "\n")
    assert view(vault, example_password).returncode != 0
    opened = view(vault, new_password)
    assert opened.returncode == 0, opened.stderr
    values = yaml.safe_load(opened.stdout)
    assert set(values) == {"vault_database_password", "vault_session_secret"}
    assert values["vault_session_secret"] != "example-session-secret-change-me"
    assert len(set(values.values())) == 2
    assert all(len(value) >= 32 for value in values.values())
    secrets = ansible(
        "ansible", "-i", str(dest), "app1.example.com", "-m", "ansible.builtin.debug",
        "-a", "var=asgi_app_secrets", "--vault-password-file", str(new_password),
    )  # fmt: skip
    assert secrets.returncode == 0, secrets.stdout + secrets.stderr
    assert (
        json.loads(secrets.stdout.split("=>", 1)[1])["asgi_app_secrets"]["SESSION_SECRET"]
        == (values["vault_session_secret"])
    )
    again = ansible(str(REPO / "scripts/new-inventory.sh"), str(dest), str(new_password))
    assert again.returncode == 2
    assert "exists already" in again.stderr
    assert view(vault, new_password).stdout == opened.stdout


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """The example, copied as an operator would, with the balancers' certificate and key
    it names put in its files/."""
    copy = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, copy)
    certificate, key, _ = make_certificate(tmp_path)
    (copy / "files").mkdir()
    shutil.copy(certificate, copy / "files" / "shop.example.com.fullchain.pem")
    shutil.copy(key, copy / "files" / "shop.example.com.key")
    return copy


def validate(inventory: Path, password_file: Path) -> subprocess.CompletedProcess[str]:
    """playbooks/validate.yml (what site.yml and deploy.yml run first) against `inventory`,
    every host reached on this machine: the checks run on the controller, and the hosts are
    only asked about their accounts."""
    return ansible(
        "ansible-playbook", "-i", str(inventory), "playbooks/validate.yml",
        "--vault-password-file", str(password_file),
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
    )  # fmt: skip


def test_the_example_passes_every_check_site_yml_makes_first(example_copy: Path, password_file: Path) -> None:
    result = validate(example_copy, password_file)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for host in ("app1.example.com", "app2.example.com", "app3.example.com", "lb1.example.com"):
        counters = recap(result.stdout, host)
        assert counters["failed"] == 0, host
        assert counters["changed"] == 0, host


@pytest.mark.parametrize(
    ("balancer_vars", "expected"),
    [
        pytest.param(
            {"nginx_server_names": ["shop.example.com", "www.example.com"]},
            "The balancers accept ['www.example.com'] (haproxy_server_names, wired from",
            id="a-name-the-app-hosts-refuse",
        ),
        pytest.param(
            {"haproxy_https_public_port": 8443},
            "haproxy_https_public_port (8443) and the app servers' nginx_https_public_port (443)",
            id="another-public-port",
        ),
    ],
)
def test_a_balancer_that_would_pass_on_what_the_app_hosts_refuse_stops_the_run(
    example_copy: Path, password_file: Path, balancer_vars: dict[str, object], expected: str
) -> None:
    (example_copy / "host_vars").mkdir()
    (example_copy / "host_vars" / "lb1.example.com.yml").write_text(yaml.safe_dump(balancer_vars))
    result = validate(example_copy, password_file)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout[-4000:]
    assert recap(result.stdout, "lb1.example.com")["failed"] == 1
