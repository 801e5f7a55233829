"""The journal knows a recipient by its key as compared (``addresses.key_identity``).

Journals written before keys were compared as addresses hold each key as the CSV spelled
it (``Ann@Example.org ``). The first writer to open such a journal rewrites its keys once,
in the transaction that settles it, and notes so in ``meta``; a reader of a journal not
rewritten yet sees the keys rewritten in a temporary table. Two stored keys that are one
address (the same person, mailed once per spelling by an older batchmail) cannot both be
kept: the journal is refused, naming them, rather than one of them silently dropped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from batchmail.addresses import key_identity
from batchmail.errors import RunAborted
from batchmail.journal_fold import COLUMNS

_META = "keys"
_COMPARED = "identity"  # every key is key_identity of itself
_KEYED = "temp.keyed"


def compared(connection: sqlite3.Connection) -> bool:
    """Whether the journal's keys are already the compared form."""
    row = connection.execute("SELECT value FROM meta WHERE name = ?", (_META,)).fetchone()
    return row is not None and row[0] == _COMPARED


def rewrite(connection: sqlite3.Connection, path: Path) -> None:
    """In the caller's write transaction, after its reservations are gone: every stored key
    in its compared form. Raises RunAborted when two keys become one."""
    if compared(connection):
        return
    renames: dict[str, str] = {}  # new -> old; memory for the keys that change only
    for (key,) in connection.execute("SELECT key FROM entries"):
        new = key_identity(key)
        if new == key:
            continue
        other = renames.setdefault(new, key)
        if other != key:
            raise _collision(path, other, key)
    for new, old in renames.items():
        clash = connection.execute("SELECT 1 FROM entries WHERE key = ?", (new,)).fetchone()
        if clash is not None:
            raise _collision(path, new, old)
    connection.executemany(
        "UPDATE entries SET key = ? WHERE key = ?", ((n, o) for n, o in renames.items())
    )
    connection.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (_META, _COMPARED),
    )


def reading_table(connection: sqlite3.Connection, path: Path, table: str) -> str:
    """What a reader of a journal not rewritten yet queries: ``table`` with its keys in the
    compared form, in a temporary table (the file is not written). ``table`` itself when the
    journal's keys are already compared."""
    if compared(connection):
        return table
    columns = ", ".join(COLUMNS)
    selected = ", ".join("bm_key(key)" if c == "key" else c for c in COLUMNS)
    connection.create_function("bm_key", 1, key_identity, deterministic=True)
    connection.execute(f"CREATE TEMP TABLE keyed AS SELECT {columns} FROM {table} LIMIT 0")
    try:
        connection.execute("CREATE UNIQUE INDEX temp.keyed_by_key ON keyed (key)")
        connection.execute(f"INSERT INTO {_KEYED} ({columns}) SELECT {selected} FROM {table}")
    except sqlite3.IntegrityError:
        raise _collision(path, *_first_collision(connection, table)) from None
    connection.execute("CREATE INDEX temp.keyed_by_row ON keyed (row_number, key)")
    return _KEYED


def _first_collision(connection: sqlite3.Connection, table: str) -> tuple[str, str]:
    first: dict[str, str] = {}
    for (key,) in connection.execute(f"SELECT key FROM {table}"):
        other = first.setdefault(key_identity(key), key)
        if other != key:
            return other, key
    return "?", "?"


def _collision(path: Path, one: str, other: str) -> RunAborted:
    return RunAborted(
        f"the journal {path} records {one!r} and {other!r} as two recipients, but they are "
        "one address (batchmail now compares addresses ignoring case and surrounding "
        "spaces; an older version mailed each spelling). Keep one row of them in the CSV "
        "and finish this campaign with the batchmail that started it, or start the rest as "
        "a new campaign (another `name:`)"
    )
