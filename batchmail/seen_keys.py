"""Which recipient keys a pass over the CSV has seen, and on which row, in bounded memory.

Small lists stay in a dict. Past ``in_memory`` keys the registry moves to a private SQLite
database on disk (SQLite deletes it when the connection closes), whose page cache is
bounded, so a million-row file costs the same memory as a hundred-thousand-row one.
"""

from __future__ import annotations

import hashlib
import sqlite3

IN_MEMORY_KEYS = 20_000  # about 2 MB of dict; beyond it, a temporary database


def key_digest(key: str) -> bytes:
    """12 bytes stand for a key: a collision needs about 2**48 keys."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=12).digest()


class SeenKeys:
    def __init__(self, in_memory: int | None = None) -> None:
        self._in_memory = IN_MEMORY_KEYS if in_memory is None else in_memory
        self._rows: dict[bytes, int] = {}
        self._db: sqlite3.Connection | None = None

    def first_row(self, key: str, row: int) -> int:
        """The row on which ``key`` was first seen; ``row`` itself if it is new."""
        digest = key_digest(key)
        if self._db is None:
            first = self._rows.setdefault(digest, row)
            if len(self._rows) > self._in_memory:
                self._spill()
            return first
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO seen (digest, row) VALUES (?, ?)", (digest, row)
        ).rowcount
        if inserted:
            return row
        (first,) = self._db.execute("SELECT row FROM seen WHERE digest = ?", (digest,)).fetchone()
        return int(first)

    def close(self) -> None:
        self._rows.clear()
        if self._db is not None:
            self._db.close()  # the database file goes with it
            self._db = None

    def _spill(self) -> None:
        # "" is SQLite's private temporary database: on disk, deleted on close. Nothing in
        # it needs to survive a crash, so no journal and no syncing.
        db = sqlite3.connect("", isolation_level=None)
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -4096")  # KiB: the memory bound
        db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY, row INTEGER) WITHOUT ROWID")
        db.execute("BEGIN")  # one transaction for the whole pass; never committed
        db.executemany("INSERT INTO seen (digest, row) VALUES (?, ?)", self._rows.items())
        self._rows.clear()
        self._db = db
