"""Releases of the example app (examples/notes): v1 as it is in the repository, v2 with an
expanding migration (a nullable column v1's code ignores), and a release whose migration fails."""

from __future__ import annotations

import shutil
from pathlib import Path

from asgikit_testing.projects import uv

REPO = Path(__file__).resolve().parents[2]
NOTES = REPO / "examples" / "notes"

ADD_TAGS_MIGRATION = '''"""Add a nullable tags column: v1, still serving elsewhere, ignores it."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("notes", sa.Column("tags", sa.String(200), nullable=True))
'''

BROKEN_MIGRATION = '''"""A migration that fails halfway."""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute("ALTER TABLE notes ADD COLUMN broken_half integer")
    op.execute("SELECT no_such_column FROM notes")
'''

# v2: the model and the API learn the tags column.
V2_EDITS = {
    "src/notes/db.py": [
        ("from sqlalchemy import DateTime, Text,", "from sqlalchemy import DateTime, String, Text,"),
        (
            "server_default=func.now())\n",
            "server_default=func.now())\n"
            "    tags: Mapped[str | None] = mapped_column(String(200), nullable=True)\n",
        ),
    ],
    "src/notes/main.py": [
        ("    text: str\n", "    text: str\n    tags: str | None = None\n"),
        ('"created": note.created.isoformat()}', '"created": note.created.isoformat(), "tags": note.tags}'),
        ("row = Note(text=note.text)", "row = Note(text=note.text, tags=note.tags)"),
    ],
}


def notes_release(out: Path, version: str) -> Path:
    """examples/notes as `version` (1.x as it is, 2.x with tags, 3.x with a failing migration),
    locked again with uv; returns the project directory."""
    project = out / f"notes-{version}"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(NOTES, project, ignore=shutil.ignore_patterns(".venv", "__pycache__", "dist"))
    edits: dict[str, list[tuple[str, str]]] = {
        "pyproject.toml": [('version = "1.0.0"', f'version = "{version}"')]
    }
    if not version.startswith("1."):
        for name, pairs in V2_EDITS.items():
            edits.setdefault(name, []).extend(pairs)
        (project / "migrations/versions/0002_add_tags.py").write_text(ADD_TAGS_MIGRATION)
    if version.startswith("3."):
        (project / "migrations/versions/0003_broken.py").write_text(BROKEN_MIGRATION)
    for name, pairs in edits.items():
        path = project / name
        text = path.read_text()
        for old, new in pairs:
            assert old in text, f"{name} has no {old!r}"
            text = text.replace(old, new, 1)
        path.write_text(text)
    uv("lock", "--quiet", cwd=project)
    return project
