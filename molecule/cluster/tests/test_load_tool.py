"""scripts/load.py, as an operator runs it: load on a published port around a command."""

from __future__ import annotations

import subprocess
import sys

from asgikit_testing.containers import published_port
from conftest import BALANCER, REPO, testinfra_hosts

__all__ = ["testinfra_hosts"]  # testinfra reads it from the test module


def load_around(*command: str, min_requests: int, seconds: float) -> subprocess.CompletedProcess[str]:
    """Runs the tool against the balancer's port with `command` as the operation."""
    port = published_port(BALANCER, 443)
    options = ["--port", str(port), "--insecure", "--steady", str(seconds), "--after", str(seconds)]
    options += ["--min-requests", str(min_requests)]
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/load.py"), *options, "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_load_tool_prints_phases_and_succeeds_around_a_harmless_command() -> None:
    result = load_around("sleep", "2", min_requests=2000, seconds=1)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("phase"))
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 4]}
    assert set(rows) == {"steady", "operation", "after"}
    assert int(rows["operation"][1]) >= 2000
    assert rows["operation"][2] == "0"  # failed
    assert "operation exit status: 0" in result.stdout


def test_load_tool_fails_when_the_command_fails() -> None:
    result = load_around("false", min_requests=100, seconds=0.5)
    assert result.returncode == 1
    assert "operation exit status: 1" in result.stdout
