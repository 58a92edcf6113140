"""Times a code-only release on the demo host, with this kit and with an earlier one.

A code-only release changes the app's code and nothing it depends on. For each kit, the
script converges the demo host (`make demo` must have run) with one new version of the
reference app first, so that every cache a kit keeps is warm, then times `site.yml` with a
second new version, and a run that changes nothing. The difference is what one code-only
release costs a host: build, copy, install, import check, switch and HUP.

    .venv/bin/python scripts/release_timing.py                 # this kit against 702ccf4
    .venv/bin/python scripts/release_timing.py --before REV

702ccf4 is the last commit whose hosts built each release's venv themselves, with pip from
the index; from the next one on, the controller builds an artifact and hosts install it
offline with uv. Only the demo container (127.0.0.1) is touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from asgikit_testing.wheels import build_wheel  # noqa: E402

INVENTORY = "inventories/demo/hosts.yml"


def site(checkout: Path, source_variable: str, wheel: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env |= {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(checkout / "ansible.cfg")}
    started = time.monotonic()
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-playbook"),
            "-i",
            INVENTORY,
            "site.yml",
            "-e",
            f"{source_variable}={wheel}",
        ],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"site.yml failed in {checkout}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return seconds


def measure(name: str, checkout: Path, variable: str, wheels: list[Path]) -> tuple[str, float, float]:
    print(f"==> {name}: warming its caches with {wheels[0].name}", flush=True)
    site(checkout, variable, wheels[0])
    print(f"==> {name}: a code-only release, {wheels[1].name}", flush=True)
    release = site(checkout, variable, wheels[1])
    unchanged = site(checkout, variable, wheels[1])
    return name, release, unchanged


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default="702ccf4", help="the earlier kit's commit (default: 702ccf4)")
    args = parser.parse_args()
    stamp = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        wheels = [build_wheel(out, f"1.0.{n}+t{stamp}") for n in range(1, 5)]
        before = out / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=REPO, check=True)
        try:
            rows = [
                measure(f"before ({args.before}, on-host pip)", before, "asgi_app_wheel", wheels[:2]),
                measure("after (this kit, artifact + uv)", REPO, "asgi_app_source", wheels[2:]),
            ]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO, check=False)
    print(f"\n{'kit':<36}{'code-only release, s':>22}{'no change, s':>14}{'release cost, s':>17}")
    for name, release, unchanged in rows:
        print(f"{name:<36}{release:>22.1f}{unchanged:>14.1f}{release - unchanged:>17.1f}")
    (_, b_release, b_unchanged), (_, a_release, a_unchanged) = rows
    print(f"\nrelease cost after / before: {(a_release - a_unchanged) / (b_release - b_unchanged):.2f}")


if __name__ == "__main__":
    main()
