"""Read a campaign's journal from a test, straight through sqlite3: what each key's status is
and whether the file is sound. Independent of ``batchmail.journal`` on purpose, so a bug
there cannot hide itself."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

JOURNAL_NAME = "journal.sqlite3"


def journal_file(campaign: Path, name: str = "test-campaign") -> Path:
    """Where ``batchmail`` keeps the journal of the campaign file ``campaign``."""
    return campaign.parent / ".batchmail" / name / JOURNAL_NAME


def statuses(path: Path) -> dict[str, str]:
    """key -> raw status ("sent", "failed", "deferred", "unknown" or "in_flight")."""
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT key, status FROM entries"))
    finally:
        connection.close()


def integrity(path: Path) -> str:
    """SQLite's own verdict on the whole file ("ok" when sound)."""
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def snapshot(path: Path, destination: Path) -> Path:
    """Copy the journal with its WAL and shared-memory files, as a killed process left them;
    opening the copy replays the WAL as a new process would. Returns the copy's path."""
    destination.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copy2(source, destination / source.name)
    return destination / path.name
