"""Project sources made from the reference app, one per source form the kit takes: a member of
a uv workspace whose uv.lock sits at the workspace root, a project locked with a requirements
file with hashes, one locked with a pylock.toml, and a git repository holding the workspace."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
# A file the app's project carries beside its package, as alembic.ini would be.
PROJECT_FILE = "settings/release.ini"


def uv(*args: str, cwd: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "uv", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _copy_app(target: Path, version: str) -> Path:
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("dist", "*.egg-info", "__pycache__"))
    pyproject = target / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1.0.0"', f'version = "{version}"', 1))
    (target / PROJECT_FILE).parent.mkdir(parents=True, exist_ok=True)
    (target / PROJECT_FILE).write_text(f"[release]\nversion = {version}\n")
    return target


def uv_workspace(root: Path, version: str) -> Path:
    """A uv workspace at `root` whose member `app` is the reference app as `version`, locked
    at the workspace root. Returns the member's directory."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["app"]\n')
    member = _copy_app(root / "app", version)
    uv("lock", "--quiet", cwd=root)
    return member


def requirements_project(directory: Path, version: str) -> Path:
    """The reference app as `version`, locked by a requirements.txt with hashes."""
    scratch = uv_workspace(directory.with_name(directory.name + "-lock"), version)
    _copy_app(directory, version)
    exported = uv(
        "export", "--locked", "--no-dev", "--no-emit-project", "--no-header", "--format", "requirements-txt",
        cwd=scratch,
    )  # fmt: skip
    (directory / "requirements.txt").write_text(exported)
    return directory


def pylock_project(directory: Path, version: str) -> Path:
    """The reference app as `version`, locked by a PEP 751 pylock.toml."""
    scratch = uv_workspace(directory.with_name(directory.name + "-lock"), version)
    _copy_app(directory, version)
    uv(
        "export",
        "--locked",
        "--no-dev",
        "--format",
        "pylock.toml",
        "-o",
        str(directory / "pylock.toml"),
        cwd=scratch,
    )
    return directory


def git_repository(directory: Path, version: str, tag: str) -> str:
    """A git repository holding a uv workspace with the app as `version`, tagged `tag`; returns
    the source for asgi_app_source (git+file URL, the tag, the member's subdirectory)."""
    uv_workspace(directory, version)
    git = ["git", "-C", str(directory), "-c", "user.name=asgikit", "-c", "user.email=asgikit@localhost"]
    subprocess.run([*git[:3], "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", f"app {version}"], check=True)
    subprocess.run([*git, "tag", tag], check=True)
    return f"git+file://{directory}@{tag}#subdirectory=app"


def tamper_hashes(lock: Path, package: str) -> None:
    """Replaces every hash a requirements lock gives for `package`, as if its files had been
    swapped on the index."""
    lines, inside = [], False
    for line in lock.read_text().splitlines():
        inside = line.startswith(f"{package}==") or (inside and line.startswith(" "))
        lines.append(re.sub("[0-9a-f]{64}", "0" * 64, line) if inside else line)
    lock.write_text("\n".join(lines) + "\n")
