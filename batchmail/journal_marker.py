"""A record, outside the journal's SQLite files, that the campaign has sent mail.

A journal file that is missing, empty, or older than it was (its write-ahead log deleted)
reads as a journal with fewer entries, and every recipient it lost would be mailed again.
So before the first message's data goes out, a small file beside the journal says, synced
to the disk, that this campaign has sent mail; each run that sent rewrites it as it ends,
with the generation of the side log the journal then holds (see ``journal_log``). A journal
that disagrees with it is refused (see ``journal_checks``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from batchmail.errors import RunAborted

MARKER_NAME = "has-sent-mail"
_WHAT = "batchmail: this campaign has sent mail; journal.sqlite3 beside this file says to whom"


@dataclass(frozen=True)
class SentMarker:
    since: str  # ISO 8601 UTC: when the campaign's first message went out
    generation: int  # the side log generation the journal held at the end of the last run


def marker_path(journal: Path) -> Path:
    return journal.with_name(MARKER_NAME)


def read_marker(path: Path) -> SentMarker | None:
    """The marker, or None when the campaign never sent. A marker that cannot be read still
    says that mail was sent: it reads with generation 0 and an unknown time."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RunAborted(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        fields = json.loads(text.splitlines()[1])
        return SentMarker(str(fields["since"]), int(fields["generation"]))
    except (IndexError, ValueError, TypeError, KeyError):
        return SentMarker("an unknown time", 0)


def write_marker(path: Path, marker: SentMarker) -> None:
    """Write the marker, on the disk before this returns (a new file renamed into place)."""
    data = f"{_WHAT}\n" + json.dumps({"since": marker.since, "generation": marker.generation})
    temporary = path.with_name(path.name + ".new")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (data + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise RunAborted(f"cannot write {path}: {exc.strerror or exc}") from exc
