"""The journal's side log: what happened to reserved messages since the journal's last write,
one line each, appended to a plain file beside it.

A SQLite commit costs a tenth of a millisecond even without a disk sync, and pipelined DATA
needs two a message (marked in flight, then its outcome). An ``os.write`` of a line costs a
few microseconds, and what it wrote survives a killed process just as a commit does: it is
in the operating system's hands. So the marks and outcomes of messages the journal has
reserved go here, and the journal folds them into its SQLite file at its next write (the
next batch's reservation, whose sync then covers them too) and when it closes.

The file starts with a header line naming its generation and the boot of the machine it was
written in. Every write to the journal records, in its transaction, that it holds the log's
generation, and the next generation's log (header only) is ready beside it, renamed into
place once the transaction commits: a kill at any point leaves the log the journal expects
next. A log whose generation is not newer was folded already and is ignored. A log with no
line yet moves on in place instead, its fixed-width header rewritten after the commit: a
rename costs a forced write-back on ext4, and a run that logs nothing (a server without
PIPELINING) writes the journal twice a message. Left with no line at the generation the
journal holds, the log is the one it expects next, empty.

Each line starts with a CRC-32 of the rest (seeded with the generation), so a changed byte is
seen. On the machine's boot that wrote the log, only a kill can have stopped a write, and the
kernel stops a write only at a page boundary: a line cut short elsewhere, a line that does not
match its checksum, a log missing or of a generation the journal does not expect, all mean
the log was damaged, and reading it says so (``LogRead.damage``; the journal refuses, see
``journal_checks``). After a restart of the machine (a power cut may leave anything in a file
written without a sync) the lines before the first bad one are facts, and a message the rest
would have told of keeps its reservation, which reads as in flight.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from batchmail.errors import RunAborted

_HEADER = "batchmail journal log"
_PAGE = 4096  # the kernel writes a file a page at a time; a kill stops it only between pages
_CHECKSUM = 8  # hex digits of a line's CRC-32, then a space, then the line's JSON


class Event(NamedTuple):  # a tuple: one is made per mark and per outcome
    """One message marked in flight (``outcome`` None) or answered, at ``at``."""

    key: str
    at: str  # ISO 8601 UTC
    # status, SMTP code, reply text, refused recipients (as the journal's JSON)
    outcome: tuple[str, int | None, str, str] | None = None


class LogRead(NamedTuple):
    """What a side log holds, read back."""

    generation: int
    boot: str | None  # the machine's boot that wrote it; None: an older batchmail's log
    events: list[Event]
    damage: str | None  # why reading stopped before the end (see the module's docstring)


def log_path(journal: Path) -> Path:
    return journal.with_name(journal.name + "-log")


def next_log_path(journal: Path) -> Path:
    """Where the next generation's log waits for the transaction that makes it current."""
    return journal.with_name(journal.name + "-log.next")


def read_log(path: Path) -> LogRead | None:
    """The log's generation, boot and events in order, or None when there is no log. A file
    without a whole header reads as generation 0, with what is wrong with it as damage."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunAborted(f"cannot read the journal's log {path}: {exc.strerror or exc}") from exc
    pieces = data.split(b"\n")
    header = _header(pieces[0]) if len(pieces) > 1 else None
    if header is None:
        return LogRead(0, None, [], "it is empty" if not data else "its first line is damaged")
    generation, boot = header
    events: list[Event] = []
    for number, line in enumerate(pieces[1:-1], start=2):
        event = _event(line, generation, checked=boot is not None)
        if event is None:
            return LogRead(generation, boot, events, f"line {number} is damaged")
        events.append(event)
    cut = pieces[-1]  # empty, or a line cut short
    damage = None
    if cut and boot is not None and len(data) % _PAGE != 0:
        damage = f"line {len(pieces)} is cut short"
    return LogRead(generation, boot, events, damage)


def _header(line: bytes) -> tuple[int, str | None] | None:
    try:
        name, generation, *boot = json.loads(line)
    except (ValueError, TypeError):
        return None
    if name != _HEADER or not isinstance(generation, int) or len(boot) > 1:
        return None
    if boot and not isinstance(boot[0], str):
        return None
    return generation, boot[0] if boot else None


def _event(line: bytes, generation: int, checked: bool) -> Event | None:
    if checked:
        text = line[_CHECKSUM + 1 :]
        if line[_CHECKSUM : _CHECKSUM + 1] != b" " or line[:_CHECKSUM] != _crc(text, generation):
            return None
        line = text
    try:
        key, at, *outcome = json.loads(line)
    except (ValueError, TypeError):
        return None  # zeros where a power cut left a page unwritten: nothing past it is sure
    return Event(key, at, tuple(outcome) if outcome else None)  # type: ignore[arg-type]


def _crc(text: bytes, generation: int) -> bytes:
    """A line's checksum: over its JSON and its end of line, seeded with the generation."""
    return b"%08x" % zlib.crc32(text + b"\n", generation & 0xFFFFFFFF)


class SideLog:
    """The open log of one journal writer (see the module's docstring)."""

    def __init__(self, path: Path, generation: int, boot: str) -> None:
        self.path = path
        self.generation = generation
        self._boot = boot
        self._fd = _start(path, generation, boot)
        self._logged = False  # a line was written since the header
        self._next_path = path.with_name(path.name + ".next")
        self._next_fd: int | None = None
        with contextlib.suppress(FileNotFoundError):
            self._next_path.unlink()  # a stray one a kill left

    def append(self, events: Iterable[Event]) -> None:
        """Write the events' lines in one ``write``, before the caller goes on."""
        generation = self.generation
        lines = []
        for event in events:
            text = _line(event).encode("ascii")  # with its end of line
            lines.append(b"%08x " % zlib.crc32(text, generation & 0xFFFFFFFF) + text)
        self._logged = True
        _write(self._fd, self.path, b"".join(lines))

    def prepare_next(self) -> None:
        """Before the journal's transaction commits: write the next generation's log beside
        this one, header only, unless this one has no line (see ``switch``)."""
        self.abandon_next()
        if self._logged:
            self._next_fd = _start(self._next_path, self.generation + 1, self._boot)

    def switch(self) -> None:
        """Once the transaction committed: the next generation's log in this one's place (the
        journal holds everything before it), or this one's header rewritten in place."""
        if self._next_fd is None:
            try:
                os.pwrite(self._fd, _header_line(self.generation + 1, self._boot), 0)
            except OSError as exc:
                raise _aborted(self.path, exc) from exc
        else:
            try:
                # Unlinked first: renamed over a file, ext4 would force the new one's data out.
                self.path.unlink()
                os.rename(self._next_path, self.path)
            except OSError as exc:
                raise _aborted(self.path, exc) from exc
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._next_fd = self._next_fd, None
            self._logged = False
        self.generation += 1

    def abandon_next(self) -> None:
        """Drop a prepared log whose transaction did not commit."""
        if self._next_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._next_fd)
                self._next_path.unlink()
            self._next_fd = None

    def close(self, remove: bool) -> None:
        """Close the file; ``remove`` it when the journal holds all it said."""
        self.abandon_next()
        with contextlib.suppress(OSError):
            os.close(self._fd)
            if remove:
                self.path.unlink()


def _start(path: Path, generation: int, boot: str) -> int:
    """A new log file at ``path``, empty but for its header."""
    # Not O_APPEND: the header is rewritten in place (pwrite appends on such a file).
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise _aborted(path, exc) from exc
    try:
        _write(fd, path, _header_line(generation, boot))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _header_line(generation: int, boot: str) -> bytes:
    """The header, the same width whatever the generation (JSON allows the spaces)."""
    return f'["{_HEADER}", {generation:<20d}, {json.dumps(boot)}]\n'.encode("ascii")


def _write(fd: int, path: Path, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _aborted(path, exc) from exc


def _line(event: Event) -> str:
    """The event as a JSON list on one line, written out here: json.dumps costs several
    times as much, and this is done twice a message."""
    key, at, outcome = event
    if outcome is None:
        return f'[{_string(key)}, "{at}"]\n'
    status, code, reply, refused = outcome
    code_text = "null" if code is None else str(int(code))
    return (
        f'[{_string(key)}, "{at}", "{status}", {code_text}, {_string(reply)}, {_string(refused)}]\n'
    )


# A JSON string literal, as json.dumps writes it: ASCII, every other character escaped (a
# lone surrogate too, which UTF-8 could not carry).
_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _aborted(path: Path, exc: OSError) -> RunAborted:
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = " (free some disk space and run again; what was recorded is kept)"
    return RunAborted(f"cannot write the journal's log {path}: {exc.strerror or exc}{hint}")
