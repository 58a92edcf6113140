"""Runs the kit's playbooks as an operator does, and reads their PLAY RECAP."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def recap(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of one host."""
        return recap(self.output, host)


def recap(output: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of one host."""
    for line in output.splitlines():
        if line.startswith(host + " ") and "ok=" in line:
            return {key: int(value) for key, value in (field.split("=") for field in line.split()[2:])}
    raise AssertionError(f"no PLAY RECAP line for {host} in:\n{output[-3000:]}")


def operator_run(*argv: str, timeout: float = 900) -> Run:
    """Runs `argv` (e.g. ansible-playbook -i inventories/x site.yml) in the repository the way
    an operator's shell would: the repository's ansible.cfg, none of the ANSIBLE_* or
    MOLECULE_* settings of the test runner, no colour."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "MOLECULE_"))}
    env["ANSIBLE_NOCOLOR"] = "1"
    started = time.monotonic()
    result = subprocess.run(
        list(argv), cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    return Run(result.returncode, result.stdout + result.stderr, time.monotonic() - started)


# Every scenario playbook run's output is kept here, named after the test that ran it, for
# reading after a CI run (the profile_tasks recap shows where its time went).
PLAYBOOK_LOGS = REPO / ".cache/test-results/playbooks"


def keep_output(argv: list[str], output: str) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "outside-a-test").split(" ")[0]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{test}-{Path(argv[3]).stem}")
    PLAYBOOK_LOGS.mkdir(parents=True, exist_ok=True)
    log = PLAYBOOK_LOGS / f"{time.strftime('%H%M%S')}-{name[-150:]}.log"
    log.write_text(" ".join(argv) + "\n" + output)


class Started:
    """A playbook run in the background (scenario_start); finish() waits for it and keeps its
    output in PLAYBOOK_LOGS."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._argv = argv
        self._started = time.monotonic()
        self._process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )

    def running(self) -> bool:
        return self._process.poll() is None

    def finish(self, timeout: float = 900) -> Run:
        try:
            output, _ = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Nothing of a run that overran may go on beside what comes next.
            self._process.kill()
            self._process.communicate()
            raise
        keep_output(self._argv, output)
        return Run(self._process.returncode, output, time.monotonic() - self._started)


def scenario_inventory() -> Path:
    """The running Molecule scenario's inventory directory (its hosts, group_vars and host_vars)."""
    return Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent


def scenario_start(name: str, *args: str, inventory: Path | None = None) -> Started:
    """Starts playbooks/<name>.yml against the running Molecule scenario's inventory (or
    another), keeping the scenario's ANSIBLE_* settings (roles path, collections), without
    colour."""
    inventory = inventory or scenario_inventory()
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    argv = ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / f"{name}.yml"), *args]
    return Started(argv, env)


def scenario_run(name: str, *args: str, timeout: float = 900, inventory: Path | None = None) -> Run:
    """Runs playbooks/<name>.yml as scenario_start does, and waits for it."""
    return scenario_start(name, *args, inventory=inventory).finish(timeout)
