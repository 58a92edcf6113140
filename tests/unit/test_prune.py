"""The asgi_app role's pruning, run by Ansible on a release tree in a temporary directory:
which releases stay is decided by when they last went live, not by when they were built."""

from __future__ import annotations

import json
import os
from pathlib import Path

from asgikit_testing.playbooks import operator_run

HERE = Path(__file__).resolve().parent


def release_tree(base: Path, built: list[str], went_live: list[str]) -> None:
    """Release directories built in the order given (older mtime first), a deploy record
    that lists `went_live` in order, and `current` at the last of them."""
    for age, release in enumerate(reversed(built)):
        path = base / "releases" / release
        path.mkdir(parents=True)
        stamp = 1_700_000_000 - 3600 * age
        os.utime(path, (stamp, stamp))
    with (base / "deploys.jsonl").open("w") as record:
        for previous, release in zip(["", *went_live], went_live, strict=False):
            record.write(json.dumps({"release": release, "previous": previous, "action": "deploy"}) + "\n")
    (base / "current").symlink_to(base / "releases" / went_live[-1])


def prune(base: Path, keep: int) -> set[str]:
    # The repository's ansible.cfg (roles_path) and none of the caller's ANSIBLE_* settings.
    result = operator_run(
        "ansible-playbook", str(HERE / "prune_releases.yml"), "-e", f"base_dir={base}", "-e", f"keep={keep}"
    )
    assert result.returncode == 0, result.output
    return {path.name for path in (base / "releases").iterdir()}


def test_a_release_deployed_again_stays_the_rollback_target(tmp_path: Path) -> None:
    # A was built first and went live again before G: A is what a rollback from G returns to.
    built = ["A", "B", "C", "D", "E", "F", "G"]
    release_tree(tmp_path, built, went_live=["A", "B", "C", "D", "E", "F", "A", "G"])
    assert prune(tmp_path, keep=5) == {"G", "A", "F", "E", "D"}


def test_releases_that_never_went_live_go_first(tmp_path: Path) -> None:
    # X is the newest build, but its check failed, so it never went live.
    release_tree(tmp_path, ["A", "B", "C", "X"], went_live=["A", "B", "C"])
    assert prune(tmp_path, keep=2) == {"C", "B"}


def test_nothing_goes_while_the_releases_fit(tmp_path: Path) -> None:
    release_tree(tmp_path, ["A", "B", "C"], went_live=["A", "B", "C"])
    assert prune(tmp_path, keep=5) == {"A", "B", "C"}
