"""The durable record of who got what: one SQLite row per recipient key.

Every write is one short transaction in WAL mode, committed before the method returns,
so a process killed at any line leaves either the state before the write or the state
after it, never a gap:

- ``mark_in_flight`` is committed before the message data goes to the server, so
  a kill while the data is out leaves ``in_flight``, which reads as ``unknown``;
- the schema and its version are created in one transaction, so a kill during
  creation leaves a blank file that the next ``open`` initialises.

A commit normally waits for the disk (``synchronous=FULL``): it survives a power cut too.
Pipelined DATA sends one message per round trip, and a disk sync per message would cost
more than the round trip, so the runner first ``reserve``s a batch, with one sync. Each
message's mark, and then its outcome, is a line appended to a side log beside the file
(``journal_log``), with no sync and no SQLite transaction, folded into the file at the
journal's next write (the next reservation, whose sync covers it) and when it closes. What
a line says is in the operating system's hands once written: a killed process cannot lose
it, and readers and the next writer read the side log too. Reading a journal, a reservation
left from the current boot of the machine, with no line for it, means the data never went
out: only a power cut or a crash of the machine loses a line. A reservation left from an
earlier boot may have lost its lines, so that message reads as ``in_flight`` (``unknown``):
what a power cut costs is doubt, never a message sent twice. How each status and attempt
count changes is in ``journal_fold``.

A journal whose files disagree (one lost or damaged after a kill) is refused rather than
read as if fewer messages had gone out: see ``journal_checks``. Its files are the user's
alone (0600): they name every recipient.

Every sqlite3 error becomes ``RunAborted`` naming the journal and the reason.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from batchmail import journal_fold, journal_keys
from batchmail.clock import timestamp
from batchmail.errors import RunAborted
from batchmail.journal_checks import (
    KNOWN_STATUSES,
    damaged,
    log_problems,
    marker_problems,
    unknown_status,
)
from batchmail.journal_fold import COLUMNS, IN_FLIGHT, KEYS_PER_QUERY, About
from batchmail.journal_log import Event, LogRead, SideLog, log_path, next_log_path, read_log
from batchmail.journal_marker import SentMarker, marker_path, read_marker, write_marker
from batchmail.outcomes import ComposedMessage, Outcome, RecipientRefusal, Status

# 2 added the reserved table; 3 the side log (an older batchmail, blind to its lines, would
# take a message whose data went out for one never sent). An older journal is upgraded when
# written.
SCHEMA_VERSION = 3
# Stamped in the file header so a journal is told apart from any other SQLite file.
APPLICATION_ID = 0x626D6A31  # "bmj1"
# Long enough to wait out a `status` reader's checkpoint, short enough to report a stuck lock.
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = (
    f"""CREATE TABLE entries (
        key TEXT PRIMARY KEY,
        row_number INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sent', 'failed', 'deferred', 'unknown',
                                               '{IN_FLIGHT}')),
        code INTEGER,
        reply TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        rcpt_tos TEXT NOT NULL,          -- JSON list of addresses
        refused TEXT NOT NULL,           -- JSON list of [address, code, reply] (and of
                                         -- addresses that have the message: see accepted)
        first_attempt_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # entries() streams in CSV order through this index instead of sorting every row.
    "CREATE INDEX entries_by_row ON entries (row_number, key)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
# Messages about to be marked in flight (see the module's docstring), with what an
# ``in_flight`` entry needs if the machine restarted before the mark was safe on disk.
_RESERVED_SCHEMA = """CREATE TABLE IF NOT EXISTS reserved (
    key TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,           -- the machine's boot when the reservation was made
    row_number INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    reserved_at TEXT NOT NULL
) WITHOUT ROWID"""  # one b-tree: a mark's delete dirties one page, not two
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_READER_LOOKS = 3  # see _recovered_for_reading
_COLUMNS = ", ".join(COLUMNS)
# Primary SQLite result code -> what the user can do about it.
_HINTS = {
    5: "another process is using it; wait for it to finish",  # SQLITE_BUSY
    6: "another process is using it; wait for it to finish",  # SQLITE_LOCKED
    8: "check that the file and its directory are writable",  # SQLITE_READONLY
    10: "check that the disk is not full or failing",  # SQLITE_IOERR
    11: "the file is damaged; keep a copy before doing anything else",  # SQLITE_CORRUPT
    13: "free some disk space and run again; what was recorded is kept",  # SQLITE_FULL
    14: "check that the path is a file in a writable directory",  # SQLITE_CANTOPEN
}
_SQLITE_NOTADB = 26
NOT_ATTEMPTED = "connection lost before the message was sent"  # the reply of a taken-back mark


class _HasKey(Protocol):
    @property
    def key(self) -> str: ...


_Keyed = TypeVar("_Keyed", bound=_HasKey)


@dataclass(frozen=True)
class JournalEntry:
    """What the journal knows about one recipient key."""

    key: str
    row_number: int
    status: str  # "sent" | "failed" | "deferred" | "unknown" | "in_flight"
    code: int | None
    reply: str
    attempts: int  # SMTP transactions tried, whatever their end
    message_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    refused: tuple[RecipientRefusal, ...]
    first_attempt_at: str  # ISO 8601 UTC
    updated_at: str  # ISO 8601 UTC
    # Envelope recipients that have the message although the row is not sent (a Bcc that
    # accepted while the To refused): a resend leaves them out.
    accepted: tuple[str, ...] = ()

    @property
    def effective_status(self) -> str:
        """``in_flight`` reads as ``unknown``: we crashed while the data was out."""
        return Status.UNKNOWN.value if self.status == IN_FLIGHT else self.status

    def resendable(self, include_unknown: bool = False) -> bool:
        """Whether ``resend`` should try this recipient again.

        Unknown messages may have arrived, so they are retried only on request.
        """
        status = self.effective_status
        if status in (Status.FAILED, Status.DEFERRED):
            return True
        return include_unknown and status == Status.UNKNOWN


class Journal:
    """An open journal file. Build one with ``open`` or ``open_readonly``."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        readonly: bool,
        boot: str | None,
        entries_table: str = "entries",
        marker: SentMarker | None = None,
        allow_damaged: bool = False,
    ) -> None:
        self.path = path
        self.readonly = readonly
        # The record that this campaign has sent mail (see journal_marker), once there is one.
        self._marker = marker
        self._allow_damaged = allow_damaged  # an unknown status reads as unknown
        self._connection: sqlite3.Connection | None = connection
        # Parallel sessions share one journal: one statement or transaction at a time.
        self._lock = threading.RLock()
        # What readers query: the entries, or a view that adds the reservations an earlier
        # boot of the machine left (see _reading_view).
        self._entries = entries_table
        self._boot_id = boot  # this boot of the machine (see boot_id)
        self._reserved: set[str] = set()  # keys this journal reserved and has not marked yet
        self._unsynced = False  # the last commit was not synced to the disk
        # Marks and outcomes of reserved messages: written to the side log, not yet folded
        # into the SQLite file (see journal_log).
        self._log: SideLog | None = None
        self._pending: list[tuple[Event, About]] = []

    @classmethod
    def open(cls, path: Path, allow_damaged: bool = False) -> Journal:
        """Open the journal for writing, creating its directory, file and schema if needed.
        A damaged journal is refused (RunAborted) unless ``allow_damaged``: then what it
        cannot account for reads as unknown (see journal_checks)."""
        marker = read_marker(marker_path(path))
        if marker is not None and not path.exists() and not allow_damaged:
            raise damaged(path, marker_problems(path, marker, 0, True, exists=False))
        existed = _create_private(path)
        connection = _connect(path, str(path), uri=False)
        with _closed_on_error(connection, path):
            # Identify first: another program's database must not be switched to WAL.
            blank = _identify(connection, path)
            problems = marker_problems(path, marker, 0, True, existed) if blank else []
            if problems and not allow_damaged:
                raise damaged(path, problems)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            if blank:
                _create_schema(connection, path)
            boot = boot_id()
            generation, overridden = _settle(connection, path, boot, marker, allow_damaged)
            # Between writes: every write but a fold of the side log asks for FULL.
            connection.execute("PRAGMA synchronous = NORMAL")
            journal = cls(path, connection, False, boot, "entries", marker, allow_damaged)
            if boot is not None:  # without a boot id nothing is reserved, nothing logged
                journal._log = SideLog(log_path(path), generation + 1, boot)
            if marker is not None and (problems or overridden):
                # Accepted as it is now: the next run compares with this.
                journal._marker = SentMarker(marker.since, generation)
                write_marker(marker_path(path), journal._marker)
        return journal

    @classmethod
    def open_readonly(cls, path: Path, allow_damaged: bool = False) -> Journal | None:
        """Open the journal for reading only, or return None when nothing was journalled yet.

        None means there is no journal file, or only a blank one left by a run killed
        before its first write: either way no message was sent. The file is never created.
        A damaged journal is refused as by ``open``.
        """
        marker = read_marker(marker_path(path))
        if not path.exists() or _creation_interrupted(path):
            _nothing_sent(path, marker, allow_damaged, exists=path.exists())
            return None
        try:
            connection, blank = _open_for_reading(path, "?mode=ro")
        except RunAborted:
            if not _settled_on_read_only_storage(path):
                raise
            # Reading a WAL journal takes a -shm file beside it, which read-only storage
            # (a disk the kernel remounted read-only after errors) cannot hold. With no WAL
            # left, the main file is the whole journal, and nothing can be writing to it.
            connection, blank = _open_for_reading(path, "?mode=ro&immutable=1")
        if blank:
            connection.close()
            _nothing_sent(path, marker, allow_damaged, exists=True)
            return None
        boot = boot_id()
        with _closed_on_error(connection, path):
            table = _reading_view(connection, path, boot, marker, allow_damaged)
            table = journal_keys.reading_table(connection, path, table)
        return cls(path, connection, True, boot, table, marker, allow_damaged)

    def get(self, key: str) -> JournalEntry | None:
        with self._reading() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM {self._entries} WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else self._entry(row)

    def get_many(self, keys: Sequence[str]) -> dict[str, JournalEntry]:
        """The entries of those keys the journal has; one query per few hundred keys."""
        with self._reading() as connection:
            found = journal_fold.rows(connection, keys, self._entries)
        return {key: self._entry(row) for key, row in found.items()}

    def reserve(self, messages: Sequence[ComposedMessage]) -> None:
        """Record, durably and in one transaction, that these messages are about to be
        marked in flight one by one; their marks and outcomes then go to the side log, with
        no sync each (see the module's docstring). A message the journal records as sent is
        refused here (ValueError), before any data could go. Without a boot id to tell a
        restart by, nothing is reserved and every mark syncs."""
        if self._boot_id is None or not messages:
            return
        self._note_sending()
        with self._writing() as connection:
            for key, entry in journal_fold.rows(connection, (m.key for m in messages)).items():
                if entry["status"] == Status.SENT:
                    raise journal_fold.sent_already(key, "reserve")
            now = _now()
            connection.executemany(
                "INSERT OR REPLACE INTO reserved (key, boot_id, row_number, message_id,"
                " mail_from, rcpt_tos, reserved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((m.key, self._boot_id, *_about(m), now) for m in messages),
            )
            self._reserved.update(message.key for message in messages)

    def mark_in_flight(self, message: ComposedMessage) -> None:
        """Record, durably, that the message data is about to go to the server."""
        self.mark_in_flight_many((message,))

    def mark_in_flight_many(
        self,
        messages: Iterable[ComposedMessage],
        answered: Iterable[tuple[ComposedMessage, Outcome]] = (),
    ) -> None:
        """Record, before the caller goes on, that these messages' data is about to go out
        (a pipelined window of them), and the outcomes of ``answered`` messages (those that
        came back since the last write: one write for both). When every message was
        reserved, this is a line in the side log; else a synced transaction."""
        messages = list(messages)
        if messages:
            self._note_sending()
        now = _now()
        events = [(_outcome_event(m, o, now), _about(m)) for m, o in answered]
        events += [(Event(m.key, now), _about(m)) for m in messages]
        reserved = bool(messages) and all(m.key in self._reserved for m in messages)
        self._note(events, logged=reserved)
        self._reserved.difference_update(message.key for message in messages)

    def record(self, message: ComposedMessage, outcome: Outcome) -> None:
        """Record, durably, the server's answer (or its absence) for one message."""
        self.record_many(((message, outcome),))

    def record_many(
        self, results: Iterable[tuple[ComposedMessage, Outcome]], durable: bool = True
    ) -> None:
        """Record the outcomes of several messages at once; durably, unless they were
        reserved: then in the side log, which the next reservation's sync, or ``close``,
        folds in (and until then a power cut leaves them in doubt, never pending)."""
        now = _now()
        self._note([(_outcome_event(m, o, now), _about(m)) for m, o in results], logged=not durable)

    def unmark(self, messages: Iterable[ComposedMessage]) -> None:
        """Take back the in-flight marks of messages none of whose transaction went out
        (the connection went before their turn): one never attempted before is pending
        again, any other is ``deferred`` with its earlier attempts. Synced: rare."""
        keys = [message.key for message in messages]
        with self._writing() as connection:
            for key, row in journal_fold.rows(connection, keys).items():
                if row["status"] != IN_FLIGHT:
                    continue
                if row["attempts"] <= 1:
                    connection.execute("DELETE FROM entries WHERE key = ?", (key,))
                else:
                    connection.execute(
                        "UPDATE entries SET status = 'deferred', attempts = attempts - 1,"
                        " code = NULL, reply = ? WHERE key = ?",
                        (NOT_ATTEMPTED, key),
                    )

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry in CSV row order, read from a cursor one at a time."""
        with self._reading() as connection:
            for row in connection.execute(
                f"SELECT {_COLUMNS} FROM {self._entries} ORDER BY row_number, key"
            ):
                yield self._entry(row)

    def counts(self) -> dict[str, int]:
        """Number of entries per effective status; every status is present, zeros included."""
        totals = {status.value: 0 for status in Status}
        with self._reading() as connection:
            rows = connection.execute(
                f"SELECT status, count(*) FROM {self._entries} GROUP BY status"
            )
            for status, number in rows.fetchall():
                if status not in KNOWN_STATUSES:
                    status = self._known_status(connection, status)
                totals[Status.UNKNOWN.value if status == IN_FLIGHT else status] += number
        return totals

    def sent_since(self, moment: str) -> tuple[int, str | None]:
        """How many messages went to the server (sent, unknown or in flight) at or after
        ``moment`` (ISO 8601 UTC), and the earliest such time."""
        with self._reading() as connection:
            count, earliest = connection.execute(
                f"SELECT count(*), min(updated_at) FROM {self._entries}"
                " WHERE status IN ('sent', 'unknown', 'in_flight') AND updated_at >= ?",
                (moment,),
            ).fetchone()
        return int(count), earliest

    def sent_since_by_sender(self, moment: str) -> list[tuple[str, int, str | None]]:
        """``sent_since`` per envelope sender: (mail_from, count, earliest time), so that
        each of several sender accounts can count its own messages."""
        with self._reading() as connection:
            rows = connection.execute(
                f"SELECT mail_from, count(*), min(updated_at) FROM {self._entries}"
                " WHERE status IN ('sent', 'unknown', 'in_flight') AND updated_at >= ?"
                " GROUP BY mail_from",
                (moment,),
            ).fetchall()
        return [(str(sender), int(count), earliest) for sender, count, earliest in rows]

    def get_meta(self, name: str) -> str | None:
        with self._reading() as connection:
            row = connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._writing() as connection:
            _set_meta(connection, name, value)

    def close(self) -> None:
        # Under the lock: a session cut off by Ctrl-C may still be writing from its thread;
        # its write then comes wholly before this, or finds the journal closed.
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            if (self._reserved or self._unsynced or self._pending) and not self.readonly:
                # Reserved, never marked (the connection went first): never sent. Said
                # now, a power cut before the next run cannot make them read as unknown.
                # And the sync of this write puts every write before it on the disk, the
                # side log's lines folded in with it.
                with self._writing() as writing:
                    writing.executemany(
                        "DELETE FROM reserved WHERE key = ?", ((k,) for k in self._reserved)
                    )
                    _set_meta(writing, "synced_at", _now())
                self._reserved.clear()
            if self._log is not None:
                if self._marker is not None and not self._pending:
                    # What the journal holds now, on the disk: a journal older than this
                    # (its write-ahead log lost) is told by it once the side log is gone.
                    self._marker = SentMarker(self._marker.since, self._log.generation - 1)
                    write_marker(marker_path(self.path), self._marker)
                self._log.close(remove=not self._pending)
                self._log = None
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except sqlite3.Error as exc:
                raise _aborted("close", self.path, exc) from exc

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _note_sending(self) -> None:
        """Before the first message's data goes out: record, outside the SQLite files, that
        this campaign has sent mail (see journal_marker)."""
        with self._lock:  # parallel sessions: written once
            if self._marker is None:
                generation = 0 if self._log is None else self._log.generation - 1
                marker = SentMarker(_now(), generation)
                write_marker(marker_path(self.path), marker)
                self._marker = marker

    def _entry(self, row: Mapping[str, Any]) -> JournalEntry:
        if row["status"] not in KNOWN_STATUSES:
            row = {**row, "status": self._known_status(None, row["status"], row["key"])}
        return _entry(row)

    def _known_status(
        self, connection: sqlite3.Connection | None, status: str, key: str | None = None
    ) -> str:
        """A status the journal does not know (the file was edited) reads as unknown when
        the damage is accepted; else it is refused."""
        if self._allow_damaged:
            return Status.UNKNOWN.value
        if key is None and connection is not None:
            found = connection.execute(
                f"SELECT key FROM {self._entries} WHERE status = ? LIMIT 1", (status,)
            ).fetchone()
            key = "?" if found is None else str(found[0])
        raise unknown_status(self.path, str(key), str(status))

    def _note(self, events: list[tuple[Event, About]], logged: bool) -> None:
        """Write the events: as lines of the side log (``logged``, when there is one), or
        in a transaction of their own, synced unless ``logged``."""
        with self._lock:
            if logged and self._log is not None:
                self._log.append(event for event, _ in events)
                self._pending.extend(events)
            else:
                with self._writing(durable=not logged, events=events):
                    pass

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._pending:  # a writer reads what it wrote, its side log's lines too
                with self._writing(durable=False):
                    pass
            try:
                yield self._open_connection()
            except sqlite3.Error as exc:
                raise _aborted("read", self.path, exc) from exc

    @contextlib.contextmanager
    def _writing(
        self, durable: bool = True, events: Sequence[tuple[Event, About]] = ()
    ) -> Iterator[sqlite3.Connection]:
        """One immediate transaction, committed before the caller goes on; ``durable``:
        on the disk, too (else in the operating system's hands; see the docstring). It
        begins with the side log's lines, then ``events`` (refused, ValueError, if one is
        for a message recorded as sent), and the side log starts over once it commits."""
        if self.readonly:
            raise ValueError(f"the journal {self.path} was opened read-only")
        with self._lock:
            connection = self._open_connection()
            log = self._log
            try:
                if durable:
                    connection.execute("PRAGMA synchronous = FULL")
                connection.execute("BEGIN IMMEDIATE")
                if self._pending:
                    journal_fold.fold(connection, self._pending, guard=False)
                if events:
                    journal_fold.fold(connection, events, guard=True)
                yield connection
                if log is not None:
                    # Every write moves the side log on a generation, so that a journal that
                    # lost a write (its -wal deleted) is told by the log beside it.
                    _set_meta(connection, "log_folded", str(log.generation))
                    log.prepare_next()
                connection.execute("COMMIT")
                # A synced commit syncs the whole log, every commit before it too.
                self._unsynced = not durable
            except sqlite3.Error as exc:
                _rollback(connection)
                if log is not None:
                    log.abandon_next()
                raise _aborted("write", self.path, exc) from exc
            except BaseException:
                _rollback(connection)
                if log is not None:
                    log.abandon_next()
                raise
            finally:
                if durable:  # back to what a fold of the side log needs
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("PRAGMA synchronous = NORMAL")
            if log is not None:
                self._pending.clear()
                log.switch()

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError(f"the journal {self.path} is closed")
        return self._connection


def _connect(path: Path, database: str, uri: bool) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, nothing is deferred.
        connection = sqlite3.connect(
            database,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_SECONDS,
            uri=uri,
            check_same_thread=False,  # shared by parallel sessions, guarded by Journal._lock
        )
    except sqlite3.Error as exc:
        raise _aborted("open", path, exc) from exc
    connection.row_factory = sqlite3.Row
    return connection


def _create_private(path: Path) -> bool:
    """Create the journal's directory and an empty file readable by its owner only (SQLite
    gives the -wal and -shm files the main file's mode); tighten an older journal's files.
    Returns whether the file was there already."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                named = path.with_name(path.name + suffix)
                if named.stat().st_mode & 0o077:
                    named.chmod(0o600)
        return True
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunAborted(f"cannot create the journal {path}: {reason}") from exc
    os.close(fd)
    return False


def _creation_interrupted(path: Path) -> bool:
    """A rollback journal beside the file: a writer was killed while switching a new journal
    to WAL mode, the only time SQLite writes one here. Rolled back, the file is blank, but
    a read-only reader cannot roll it back ("attempt to write a readonly database"); the
    next writer does."""
    rollback = path.with_name(path.name + "-journal")
    try:
        return rollback.stat().st_size > 0 and path.stat().st_size > 0
    except OSError:
        return False


def _nothing_sent(path: Path, marker: SentMarker | None, allow_damaged: bool, exists: bool) -> None:
    """A reader's None for a missing or blank journal, unless the campaign has sent mail."""
    problems = marker_problems(path, marker, 0, True, exists)
    if problems and not allow_damaged:
        raise damaged(path, problems)


def _open_for_reading(path: Path, query: str) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection, and whether the journal is blank."""
    connection = _connect(path, path.absolute().as_uri() + query, uri=True)
    with _closed_on_error(connection, path):
        return connection, _identify(connection, path)


def _settled_on_read_only_storage(path: Path) -> bool:
    """True when the journal's directory cannot be written (os.access reports a read-only
    file system even to root) and no write-ahead log is left to replay."""
    wal = path.with_name(path.name + "-wal")
    settled = not wal.exists() or wal.stat().st_size == 0
    return settled and not os.access(path.parent, os.W_OK)


@contextlib.contextmanager
def _closed_on_error(connection: sqlite3.Connection, path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        connection.close()
        raise _aborted("open", path, exc) from exc
    except BaseException:
        connection.close()
        raise


def _identify(connection: sqlite3.Connection, path: Path) -> bool:
    """True for a blank database; raise unless the file is a journal we can read."""
    # One snapshot for the three: read one by one, a writer creating the journal meanwhile
    # made a reader see its tables without its application id, "another SQLite database".
    own = not connection.in_transaction
    if own:
        connection.execute("BEGIN")
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        objects = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    finally:
        if own:
            _rollback(connection)
    if application_id == 0 and version == 0 and objects == 0:
        return True
    if application_id != APPLICATION_ID:
        raise RunAborted(
            f"{path} is not a batchmail journal (it is another SQLite database);"
            " move it away or choose another campaign name"
        )
    if version > SCHEMA_VERSION:
        raise RunAborted(
            f"the journal {path} was written by a newer batchmail (schema {version},"
            f" this one knows {SCHEMA_VERSION}); upgrade batchmail"
        )
    return False


def _create_schema(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created it between our look and our lock.
        if _identify(connection, path):
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(_RESERVED_SCHEMA)
            _set_meta(connection, "created_at", _now())
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    finally:
        _rollback(connection)


def boot_id() -> str | None:
    """This boot of the machine (Linux), or None where it cannot be told."""
    try:
        text = _BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    # A UUID, checked: _reading_view writes it into SQL.
    return text if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", text) else None


def _settle(
    connection: sqlite3.Connection,
    path: Path,
    boot: str | None,
    marker: SentMarker | None,
    allow_damaged: bool,
) -> tuple[int, bool]:
    """Before writing: upgrade a version 1 journal, fold in the side log a writer that is
    gone left, and end its reservations (see journal_fold.recovered). Returns the newest
    generation of the side log the journal now holds, and whether damage was accepted."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(_RESERVED_SCHEMA)
        if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        folded, log = _side_log(connection, path)
        logged = log.events if log is not None and log.generation > folded else []
        in_doubt = _in_doubt(connection, path, folded, log, boot, marker, allow_damaged)
        changed = journal_fold.recovered(connection, None if in_doubt else boot, logged)
        connection.executemany(journal_fold.PUT, changed.values())
        connection.execute("DELETE FROM reserved")
        journal_keys.rewrite(connection, path)
        if log is not None and log.generation > folded:
            folded = log.generation
            _set_meta(connection, "log_folded", str(folded))
        connection.execute("COMMIT")
        return folded, in_doubt
    finally:
        _rollback(connection)


def _side_log(connection: sqlite3.Connection, path: Path) -> tuple[int, LogRead | None]:
    """The newest side log generation the journal holds, and the side log beside it: the
    current one, or the next one when a kill came between its transaction's commit and its
    rename into place (see journal_log)."""
    row = connection.execute("SELECT value FROM meta WHERE name = 'log_folded'").fetchone()
    folded = 0 if row is None else int(row[0])
    log = read_log(log_path(path))
    if log is None or log.generation <= folded:
        waiting = read_log(next_log_path(path))
        if waiting is not None and waiting.generation == folded + 1:
            log = waiting
    return folded, log


def _in_doubt(
    connection: sqlite3.Connection,
    path: Path,
    folded: int,
    log: LogRead | None,
    boot: str | None,
    marker: SentMarker | None,
    allow_damaged: bool,
) -> bool:
    """Refuse a damaged journal (see journal_checks), or, when that is allowed, say whether
    it is damaged: then every reservation it holds reads as in flight."""
    logged = log.events if log is not None and log.generation > folded else []
    boots = {str(b) for (b,) in connection.execute("SELECT DISTINCT boot_id FROM reserved")}
    strangers = journal_fold.unplaced(connection, logged) if logged else 0
    problems = log_problems(path, folded, log, boot, boots, strangers)
    problems += marker_problems(path, marker, folded, False, True)
    if problems and not allow_damaged:
        raise damaged(path, problems)
    return bool(problems)


def _recovered_for_reading(
    connection: sqlite3.Connection,
    path: Path,
    boot: str | None,
    marker: SentMarker | None,
    allow_damaged: bool,
) -> dict[str, journal_fold.Row]:
    """journal_fold.recovered for a reader, the damage checks passed. A running writer may
    commit and move its side log on between the reader's look at the journal and its look
    at the log, which then disagree: only a disagreement seen again is damage."""
    for attempt in range(_READER_LOOKS):
        # One snapshot for the entries and the generation they hold: a writer folding its
        # log meanwhile must not have its lines counted twice.
        connection.execute("BEGIN")
        try:
            folded, log = _side_log(connection, path)
            logged = log.events if log is not None and log.generation > folded else []
            try:
                in_doubt = _in_doubt(connection, path, folded, log, boot, marker, allow_damaged)
            except RunAborted:
                if attempt + 1 == _READER_LOOKS:
                    raise
                continue
            return journal_fold.recovered(connection, None if in_doubt else boot, logged)
        finally:
            _rollback(connection)
    raise AssertionError("unreachable")


def _reading_view(
    connection: sqlite3.Connection,
    path: Path,
    boot: str | None,
    marker: SentMarker | None,
    allow_damaged: bool,
) -> str:
    """What a reader queries for entries: the table itself, unless a writer's side log
    holds lines not folded in yet (a run going on, or killed), or reservations from an
    earlier boot are left (a power cut during a run, and no run since): then a view of the
    entries as the next writer will make them (see journal_fold.recovered)."""
    has_table = connection.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'reserved'"
    ).fetchone()[0]
    if not has_table:
        return "entries"
    changed = _recovered_for_reading(connection, path, boot, marker, allow_damaged)
    if not changed:
        return "entries"
    connection.execute(f"CREATE TEMP TABLE changed AS SELECT {_COLUMNS} FROM main.entries LIMIT 0")
    connection.executemany(
        f"INSERT INTO temp.changed ({_COLUMNS}) VALUES ({journal_fold.NAMED})",
        changed.values(),
    )
    connection.execute(
        f"""CREATE TEMP VIEW effective AS
        SELECT {_COLUMNS} FROM main.entries WHERE key NOT IN (SELECT key FROM temp.changed)
        UNION ALL SELECT {_COLUMNS} FROM temp.changed"""
    )
    return "temp.effective"


def _rollback(connection: sqlite3.Connection) -> None:
    """End a transaction a failure left open; the failure itself is what gets reported."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _set_meta(connection: sqlite3.Connection, name: str, value: str) -> None:
    connection.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _about(message: ComposedMessage) -> About:
    envelope = message.envelope
    return (
        message.row_number,
        message.message_id,
        envelope.mail_from,
        _json_list(envelope.rcpt_tos),
    )


def _outcome_event(message: ComposedMessage, outcome: Outcome, now: str) -> Event:
    status = Status(outcome.status).value
    return Event(message.key, now, (status, outcome.code, outcome.reply, _refused_json(outcome)))


def _refused_json(outcome: Outcome) -> str:
    if not outcome.refused and not outcome.accepted:
        return "[]"
    refusals: list[object] = [[r.address, r.code, r.reply] for r in outcome.refused]
    return json.dumps(refusals + list(outcome.accepted))


# A message is written three times: reserved (with its batch, up to 256 before the first
# mark), marked, then its outcome.
@functools.lru_cache(maxsize=1024)
def _json_list(items: tuple[str, ...]) -> str:
    return json.dumps(list(items))


def _entry(row: Mapping[str, Any]) -> JournalEntry:
    fields = dict(row)
    fields["rcpt_tos"] = tuple(json.loads(row["rcpt_tos"]))
    items = json.loads(row["refused"])
    fields["refused"] = tuple(RecipientRefusal(*item) for item in items if isinstance(item, list))
    fields["accepted"] = tuple(item for item in items if isinstance(item, str))
    return JournalEntry(**fields)


def _now() -> str:
    return timestamp()


def _aborted(action: str, path: Path, exc: sqlite3.Error) -> RunAborted:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary == _SQLITE_NOTADB:
        return RunAborted(f"{path} is not a batchmail journal ({exc}); move it away")
    hint = _HINTS.get(primary) if primary is not None else None
    suffix = f" ({hint})" if hint else ""
    return RunAborted(f"cannot {action} the journal {path}: {exc}{suffix}")


def with_entries(
    journal: Journal | None, items: Iterable[_Keyed]
) -> Iterator[tuple[_Keyed, JournalEntry | None]]:
    """Each item (a recipient, a message: anything with a ``key``) with its journal entry,
    in the order given, looked up a few hundred at a time instead of a query each."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, KEYS_PER_QUERY)):
        found = journal.get_many([item.key for item in chunk]) if journal else {}
        for item in chunk:
            yield item, found.get(item.key)
