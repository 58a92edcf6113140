"""An outside TLS scanner, Debian's testssl.sh, against the site as a client sees it: no
finding of MEDIUM or worse, but for those that come only from a certificate no public CA
signed (README, "Security")."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from asgikit_testing.containers import published_port

# nginx's TLS settings are the same on both hosts, and a scan takes over a minute: the
# Debian 13 host alone.
HOST = "asgikit-debian13"
# What a certificate that no public CA signed (self-signed here, the kit's CA behind
# balancers) gets from any scanner: no chain to a trusted root, no revocation URL.
EXEMPT = {"cert_chain_of_trust", "cert_revocation"}
SEVERE = {"MEDIUM", "HIGH", "CRITICAL"}


def test_testssl_finds_nothing_of_medium_severity_or_worse(tmp_path: Path, record_property: Any) -> None:
    report = tmp_path / "testssl.json"
    # The site's name at 127.0.0.1 (the published port), as a browser asks for it.
    argv = ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--ip", "127.0.0.1"]
    argv += ["--jsonfile", str(report), f"https://localhost:{published_port(HOST, 443)}/"]
    scan = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert report.exists(), scan.stdout[-3000:] + scan.stderr[-3000:]
    findings = json.loads(report.read_text())
    ids = {finding["id"] for finding in findings}
    # A whole scan, not a connection that failed early.
    assert {"TLS1_2", "TLS1_3", "cipher_order", "HSTS_time", "heartbleed", "BREACH"} <= ids, sorted(ids)
    severe = [f for f in findings if f["severity"] in SEVERE and f["id"] not in EXEMPT]
    counts = Counter(f["severity"] for f in findings)
    exempt = sorted(f["id"] for f in findings if f["severity"] in SEVERE and f["id"] in EXEMPT)
    record_property(
        "figure",
        f"testssl on {HOST}: {len(findings)} checks, "
        + ", ".join(f"{severity} {counts[severity]}" for severity in sorted(counts))
        + f"; exempt: {', '.join(exempt) or 'none'}",
    )
    assert not severe, json.dumps(severe, indent=1)
