"""Datasette (a real open-source app from PyPI) as the low-risk upstream for demo and tests.

Run ``python -m demo.web_app DIR PORT [BASE_URL]`` to serve it (the demo does).

:func:`prepare` makes a small SQLite database of team notes and a metadata file with one
writable canned query (``add_note``): Datasette renders it as an HTML form with its own CSRF
token, so a browser form post goes through the portal exactly as it would in production.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

__all__ = ["command", "prepare"]


def prepare(directory: Path) -> tuple[Path, Path]:
    """Create ``notes.db`` and ``metadata.json`` in ``directory`` (idempotent)."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "notes.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        if not conn.execute("SELECT count(*) FROM notes").fetchone()[0]:
            conn.executemany("INSERT INTO notes (body) VALUES (?)",
                             [(f"Seed note {i}",) for i in range(1, 21)])
    metadata = directory / "metadata.json"
    metadata.write_text(json.dumps({
        "title": "Team notes",
        "databases": {"notes": {"queries": {"add_note": {
            "sql": "INSERT INTO notes (body) VALUES (:body)",
            "write": True,
            "on_success_message": "Note saved",
            "on_success_redirect": "/notes/notes?_sort_desc=id",
        }}}},
    }))
    return db, metadata


def command(directory: Path, port: int, base_url: str) -> list[str]:
    """The command line that serves the database on ``127.0.0.1:port`` under ``base_url``."""
    db, metadata = prepare(directory)
    return [sys.executable, "-m", "datasette", "serve", str(db), "--host", "127.0.0.1",
            "--port", str(port), "--metadata", str(metadata), "--setting", "base_url", base_url,
            "--setting", "num_sql_threads", "2"]


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (2, 3):
        sys.exit("usage: python -m demo.web_app DIR PORT [BASE_URL]")
    argv = command(Path(args[0]), int(args[1]), args[2] if len(args) == 3 else "/apps/notes/")
    os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, fixed arguments
