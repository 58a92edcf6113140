"""nginx_tls_mode: provided installs the user's certificate and key; switching back to
selfsigned makes a fresh self-signed one. Both runs go through site.yml."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import testinfra
from cryptography import x509

from asgikit_testing.certificates import make_certificate
from asgikit_testing.clients import https_client, tls_context
from asgikit_testing.playbooks import recap
from conftest import CERTIFICATE, run_site


@pytest.fixture(scope="module")
def host() -> Any:
    """Two site.yml runs, and what they exercise (the tls role, nginx's reload) is the same
    on both platforms: the Debian 12 host alone."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host("ansible://asgikit-debian12", ansible_inventory=inventory)


def served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def test_provided_certificate_is_served_then_selfsigned_again(
    host: Any, container: str, https_port: int, tmp_path: Path
) -> None:
    cert_path, key_path, pem = make_certificate(tmp_path)
    provided = json.dumps(
        {
            "nginx_tls_mode": "provided",
            "nginx_tls_certificate_src": str(cert_path),
            "nginx_tls_key_src": str(key_path),
        }
    )
    result = run_site(container, "--extra-vars", provided)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout, container)["changed"] > 0
    assert str(key_path.read_text()) not in result.stdout  # the key is never printed
    assert host.file(CERTIFICATE).content_string == pem
    assert host.file("/etc/nginx/tls/refapp.key").mode == 0o600
    with https_client(https_port, tls_context(pem)) as client:
        assert client.get("/healthz").status_code == 200

    result = run_site(container)
    assert result.returncode == 0, result.stdout[-3000:]
    selfsigned = host.file(CERTIFICATE).content_string
    assert selfsigned != pem
    assert x509.load_pem_x509_certificate(selfsigned.encode()).issuer.rfc4514_string() == "CN=localhost"
    with https_client(https_port, tls_context(selfsigned)) as client:
        assert client.get("/healthz").status_code == 200
    assert ssl.PEM_cert_to_DER_cert(served_certificate(https_port)) == ssl.PEM_cert_to_DER_cert(selfsigned)
