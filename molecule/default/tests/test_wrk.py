"""The wrk measurement of the README, in the tests: POSTs with a JSON body over TLS from 32
connections while the service reloads six times, 3 s apart (scripts/wrk_reloads.py), on each
host. Every non-2xx answer must be the app's own: nginx never answers 502 because a worker
retired."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from conftest import REPO, SERVICE

# The figure README quotes is at least this many requests in the run.
MIN_REQUESTS = 5_000


def test_wrk_posts_through_six_reloads_get_no_answer_but_the_apps(
    https_port: int, container: str, record_property: Callable[..., None], host: Any
) -> None:
    master = host.check_output(f"systemctl show --property MainPID --value {SERVICE}")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/wrk_reloads.py"),
            "--port",
            str(https_port),
            "--container",
            container,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    print(result.stdout, result.stderr)
    verdict = re.search(
        r"^(PASS|FAIL): (\d+) requests, (\d+) non-2xx not from the app.*$", result.stdout, re.M
    )
    assert verdict is not None, result.stdout + result.stderr
    record_property(
        "figure", f"wrk on {container}, POST /echo, 32 connections, 6 reloads: {verdict.group(0)}"
    )
    assert result.returncode == 0, verdict.group(0)
    assert verdict.group(1) == "PASS"
    assert int(verdict.group(3)) == 0
    assert int(verdict.group(2)) >= MIN_REQUESTS, verdict.group(0)
    assert result.stdout.count(": exit 0") == 6
    # Reloads only: the master stayed.
    assert host.check_output(f"systemctl show --property MainPID --value {SERVICE}") == master
