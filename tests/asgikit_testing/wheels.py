"""Builds variants of the reference app's wheel: another version, or a deliberately broken one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
MAIN = "src/refapp/main.py"

# Source edits that break a release in a known way.
IMPORT_ERROR = {
    MAIN: ("from fastapi import FastAPI", "import refapp_no_such_module  # noqa\nfrom fastapi import FastAPI")
}
NEVER_READY = {MAIN: ("if not request.app.state.ready:", "if True:  # never ready")}


def build_wheel(out_dir: Path, version: str, edits: dict[str, tuple[str, str]] | None = None) -> Path:
    """The reference app as `version`, with `edits` ({file: (old, new)}) applied, as a wheel."""
    source = out_dir / f"refapp-{version}-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(APP, source, ignore=shutil.ignore_patterns("dist", "*.egg-info", "__pycache__"))
    for relative, (old, new) in {
        "pyproject.toml": ('version = "1.0.0"', f'version = "{version}"'),
        **(edits or {}),
    }.items():
        path = source / relative
        text = path.read_text()
        assert old in text, f"{relative} has no {old!r} to replace"
        path.write_text(text.replace(old, new, 1))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out_dir), str(source)],
        check=True,
    )
    return next(out_dir.glob(f"refapp-{version}-*.whl"))
