"""What the journal's files must agree on, and what to say when they do not.

Read as blank, a lost or damaged file makes recipients who were sent read as pending, and
the next run mails them again. So a journal is refused (exit 3) when:

- it is missing or empty, or holds an older side log generation than the marker recorded at
  the end of the last run (``journal_marker``): the file or its write-ahead log was lost;
- its side log, written on this boot of the machine, is damaged (a line cut short or not
  matching its checksum), or is of a newer generation than the journal holds (the journal's
  write-ahead log was lost), or tells of messages the journal has no record of;
- messages were reserved on this boot and the side log that tells what became of them is
  missing, empty or of another generation.

After a restart of the machine none of the side log's checks apply: a power cut may leave it
anywhere, and a reservation from an earlier boot reads as in flight anyway (see ``journal``).
``--allow-damaged-journal`` goes on with what the journal still holds: what it cannot account
for reads as unknown, and recipients it lost are sent to again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from batchmail.errors import RunAborted
from batchmail.journal_log import LogRead, log_path
from batchmail.journal_marker import SentMarker, marker_path
from batchmail.outcomes import Status

ALLOW_FLAG = "--allow-damaged-journal"
KNOWN_STATUSES = frozenset(status.value for status in Status) | {"in_flight"}


def log_problems(
    path: Path,
    folded: int,
    log: LogRead | None,
    boot: str | None,
    reserved_boots: set[str],
    strangers: int,
) -> list[str]:
    """What is wrong between the journal (holding side log generation ``folded``, with
    reservations made on ``reserved_boots``) and its side log ``log``; ``strangers``: how many
    keys the unfolded log tells of that the journal has neither entry nor reservation for."""
    problems = []
    name = log_path(path).name
    same_boot = boot is not None and log is not None and log.boot == boot
    if same_boot and log is not None:
        if log.damage:
            problems.append(f"its side log {name} is damaged ({log.damage})")
        if log.generation > folded + 1:
            problems.append(
                f"its side log {name} is of generation {log.generation} but the journal holds"
                f" only up to {folded}: its write-ahead log {path.name}-wal is missing or damaged"
            )
        if strangers:
            problems.append(
                f"its side log {name} tells of {strangers} message(s) the journal has no"
                f" record of: its write-ahead log {path.name}-wal is missing or damaged"
            )
    if boot is not None and boot in reserved_boots and not problems:
        if log is None:
            problems.append(f"its side log {name} is missing")
        elif log.generation == 0:
            problems.append(f"its side log {name} is damaged ({log.damage})")
        elif log.generation != folded + 1 and (log.generation != folded or log.events):
            # (At the generation the journal holds with no line: killed before its header
            # moved on, see journal_log: the log it expects, empty.)
            problems.append(
                f"its side log {name} is of generation {log.generation}, the journal expects"
                f" {folded + 1}"
            )
        if problems:
            problems[-1] += ", and messages reserved for sending may have gone out"
    return problems


def marker_problems(
    path: Path, marker: SentMarker | None, folded: int, blank: bool, exists: bool
) -> list[str]:
    """What is wrong between the journal and the record that its campaign has sent mail."""
    if marker is None:
        return []
    told = f"{marker_path(path).name} records that this campaign has sent mail since {marker.since}"
    if not exists or blank:
        return [f"the file is {'missing' if not exists else 'empty'}, but {told}"]
    if marker.generation > folded:
        return [
            f"it holds side log generation {folded}, but {told} and that the journal held"
            f" generation {marker.generation}: its write-ahead log {path.name}-wal is missing"
            " or damaged, or an older copy of the journal was put back"
        ]
    return []


def unknown_status(path: Path, key: str, status: str) -> RunAborted:
    return damaged(
        path,
        [f"the entry of {key!r} has the status {status!r}, which batchmail does not know"],
        allowed="an entry with an unknown status reads as unknown",
    )


def damaged(path: Path, problems: Sequence[str], allowed: str = "") -> RunAborted:
    """The refusal of a damaged journal: what is wrong, and what the user can do."""
    allowed = allowed or (
        "recipients it cannot account for read as unknown, and those it lost are sent to again"
    )
    return RunAborted(
        f"the journal {path} is damaged: {'; '.join(problems)}. Going on could mail someone a"
        " second time. Put back the missing or damaged file (from a backup, or the copy you"
        " altered) and run again; or, to go on with what the journal still holds, run again"
        f" with {ALLOW_FLAG} ({allowed})"
    )
