"""The journal's side log: what happened to reserved messages since the journal's last write,
one line each, appended to a plain file beside it.

A SQLite commit costs a tenth of a millisecond even without a disk sync, and pipelined DATA
needs two a message (marked in flight, then its outcome). An ``os.write`` of a line costs a
few microseconds, and what it wrote survives a killed process just as a commit does: it is
in the operating system's hands. So the marks and outcomes of messages the journal has
reserved go here, and the journal folds them into its SQLite file at its next write (the
next batch's reservation, whose sync then covers them too) and when it closes.

The file starts with a header line naming its generation. The journal records, in the
same transaction as a fold, the generation it folded; a log whose generation is not newer
was folded already (the process died before starting the next one) and is ignored. A line
cut short (a power cut in the middle of a write) ends what is read: every complete line
before it is a fact, and a message it would have told of keeps its reservation, which
reads as in flight after a restart.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from batchmail.errors import RunAborted

_HEADER = "batchmail journal log"


class Event(NamedTuple):  # a tuple: one is made per mark and per outcome
    """One message marked in flight (``outcome`` None) or answered, at ``at``."""

    key: str
    at: str  # ISO 8601 UTC
    # status, SMTP code, reply text, refused recipients (as the journal's JSON)
    outcome: tuple[str, int | None, str, str] | None = None


def log_path(journal: Path) -> Path:
    return journal.with_name(journal.name + "-log")


def read_log(path: Path) -> tuple[int, list[Event]] | None:
    """The log's generation and its events in order, or None when there is no log (or not
    even a whole header: nothing was logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunAborted(f"cannot read the journal's log {path}: {exc.strerror or exc}") from exc
    lines = iter(data.split(b"\n")[:-1])  # the last piece is empty, or a line cut short
    try:
        name, generation = json.loads(next(lines))
    except (StopIteration, ValueError, TypeError):
        return None
    if name != _HEADER or not isinstance(generation, int):
        return None
    events = []
    for line in lines:
        try:
            key, at, *outcome = json.loads(line)
        except (ValueError, TypeError):
            break  # zeros where a power cut left a page unwritten: nothing past it is sure
        events.append(Event(key, at, tuple(outcome) if outcome else None))  # type: ignore[arg-type]
    return generation, events


class SideLog:
    """The open log of one journal writer (see the module's docstring)."""

    def __init__(self, path: Path, generation: int) -> None:
        self.path = path
        self.generation = generation
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _aborted(path, exc) from exc
        self.restart(generation)

    def append(self, events: Iterable[Event]) -> None:
        """Write the events' lines in one ``write``, before the caller goes on."""
        self._write("".join(_line(event) for event in events).encode("ascii"))

    def restart(self, generation: int) -> None:
        """Start over, empty, at ``generation``: the journal holds everything before it."""
        self.generation = generation
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise _aborted(self.path, exc) from exc
        self._write((json.dumps([_HEADER, generation]) + "\n").encode("ascii"))

    def close(self, remove: bool) -> None:
        """Close the file; ``remove`` it when the journal holds all it said."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
            if remove:
                self.path.unlink()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _aborted(self.path, exc) from exc


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
