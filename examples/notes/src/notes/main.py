"""The HTTP API: create a note, read it back, list the latest; a health check answering `true`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select, text

from notes.db import Note, engine, session

app = FastAPI(title="notes")


class NoteIn(BaseModel):
    text: str


def as_dict(note: Note) -> dict[str, Any]:
    return {"id": note.id, "text": note.text, "created": note.created.isoformat()}


@app.get("/health")
def health() -> bool:
    """Answers true when the database answers. Reports no version."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


@app.post("/notes", status_code=201)
def create(note: NoteIn) -> dict[str, Any]:
    with session() as db:
        row = Note(text=note.text)
        db.add(row)
        db.commit()
        db.refresh(row)
        return as_dict(row)


@app.get("/notes/{note_id}")
def read(note_id: int) -> dict[str, Any]:
    with session() as db:
        row = db.get(Note, note_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such note")
        return as_dict(row)


@app.get("/notes")
def latest(limit: int = 10) -> list[dict[str, Any]]:
    with session() as db:
        rows = db.scalars(select(Note).order_by(Note.id.desc()).limit(max(1, min(limit, 100))))
        return [as_dict(row) for row in rows]
