"""Read a campaign's journal from a test, straight through sqlite3: what each key's status is
and whether the file is sound. Independent of ``batchmail.journal`` on purpose, so a bug
there cannot hide itself."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

JOURNAL_NAME = "journal.sqlite3"


def journal_file(campaign: Path, name: str = "test-campaign") -> Path:
    """Where ``batchmail`` keeps the journal of the campaign file ``campaign``."""
    return campaign.parent / ".batchmail" / name / JOURNAL_NAME


def statuses(path: Path) -> dict[str, str]:
    """key -> raw status ("sent", "failed", "deferred", "unknown" or "in_flight"), with the
    lines of the side log beside the file that it has not folded in yet."""
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        found = dict(connection.execute("SELECT key, status FROM entries"))
        folded = connection.execute("SELECT value FROM meta WHERE name = 'log_folded'").fetchone()
    finally:
        connection.close()
    for line in _unfolded_lines(path, 0 if folded is None else int(folded[0])):
        key, _, *outcome = line
        if found.get(key) != "sent":
            found[key] = outcome[0] if outcome else "in_flight"
    return found


def _unfolded_lines(path: Path, folded: int) -> list[list[object]]:
    """The side log's lines: a JSON header ["batchmail journal log", generation, boot], then
    one line each: 8 hex digits of a checksum, a space, a JSON list: [key, time] for a mark,
    [key, time, status, ...] for an outcome. A log whose transaction committed just before a
    kill may still wait beside it as ``-log.next``."""
    for suffix in ("-log", "-log.next"):
        log = path.with_name(path.name + suffix)
        if not log.exists():
            continue
        lines = log.read_bytes().split(b"\n")[:-1]
        if lines and json.loads(lines[0])[1] == folded + 1:
            return [
                json.loads(line[9:] if len(json.loads(lines[0])) > 2 else line)
                for line in lines[1:]
            ]
    return []


def integrity(path: Path) -> str:
    """SQLite's own verdict on the whole file ("ok" when sound)."""
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def snapshot(path: Path, destination: Path) -> Path:
    """Copy the journal with its WAL, shared-memory and side log files, as a killed process
    left them; opening the copy replays the WAL as a new process would. Returns the copy's
    path."""
    destination.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm", "-log"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copy2(source, destination / source.name)
    return destination / path.name
