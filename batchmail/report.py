"""What the journal says of a campaign, joined with its CSV: counts and who was not sent."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from batchmail import spreadsheet
from batchmail.campaign import Campaign
from batchmail.check import MessageFactory
from batchmail.errors import CampaignError, RunAborted
from batchmail.inputs import refuse_input
from batchmail.journal import Journal, JournalEntry, with_entries
from batchmail.outcomes import RecipientRefusal
from batchmail.private_files import write_whole
from batchmail.recipients import Recipient, read_recipients
from batchmail.suppression import is_suppressed, load_exclusions, write_addresses

STATUSES = ("sent", "failed", "deferred", "unknown", "pending", "suppressed")
DONE = ("sent", "suppressed")  # statuses that need nothing more


def journal_path(campaign: Campaign) -> Path:
    return campaign.state_dir / "journal.sqlite3"


@dataclass(frozen=True)
class RecipientStatus:
    key: str
    row_number: int
    status: str  # one of STATUSES
    code: int | None
    reply: str
    attempts: int
    message_id: str
    partly_refused: bool = False  # some envelope recipients were refused
    sent_at: str = ""  # ISO 8601 UTC, when the server accepted it
    refused: tuple[RecipientRefusal, ...] = ()  # every envelope recipient refused

    def as_json(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "key": self.key,
            "status": self.status,
            "code": self.code,
            "reply": self.reply,
            "attempts": self.attempts,
            "message_id": self.message_id or None,
        }
        if self.refused:
            shown["refused"] = [
                {"address": r.address, "code": r.code, "reply": r.reply} for r in self.refused
            ]
        return shown


def recipient_statuses(campaign: Campaign, journal: Journal | None) -> Iterator[RecipientStatus]:
    """Every CSV recipient in row order with its journalled status (or pending). A recipient
    on an exclusion list that was not sent (nor possibly sent) reads as suppressed."""
    for _, status in _recipients_with_statuses(campaign, journal):
        yield status


def _recipients_with_statuses(
    campaign: Campaign, journal: Journal | None
) -> Iterator[tuple[Recipient, RecipientStatus]]:
    suppressed = _suppression_test(campaign)
    for recipient, entry in with_entries(journal, read_recipients(campaign.recipients)):
        yield recipient, _status_with(recipient, entry, suppressed)


def _status_with(
    recipient: Recipient, entry: JournalEntry | None, suppressed: Callable[[Recipient], bool]
) -> RecipientStatus:
    status = _status_of(recipient.key, recipient.row_number, entry)
    if status.status not in ("sent", "unknown") and suppressed(recipient):
        status = dataclasses.replace(status, status="suppressed")
    return status


@dataclass(frozen=True)
class Selection:
    """What a run or resend that sends the rows ``select`` takes will do, before it starts."""

    to_send: int  # rows selected and on no exclusion list: the messages it will attempt
    left_alone: Counter[str]  # per status, the rows it does not take or that are excluded


def selection(
    campaign: Campaign, journal: Journal | None, select: Callable[[JournalEntry | None], bool]
) -> Selection:
    suppressed = _suppression_test(campaign)
    to_send = 0
    left_alone: Counter[str] = Counter()
    for recipient, entry in with_entries(journal, read_recipients(campaign.recipients)):
        if select(entry) and not suppressed(recipient):
            to_send += 1
        elif not select(entry):
            left_alone[_status_with(recipient, entry, suppressed).status] += 1
    return Selection(to_send, left_alone)


@contextlib.contextmanager
def status_listing(
    campaign: Campaign, journal: Journal | None, with_pending: bool = True
) -> Iterator[tuple[Counter[str], Iterator[RecipientStatus]]]:
    """The counts per status and the recipients worth listing (not sent, or sent with some
    envelope recipients refused; pending ones only ``with_pending``), in row order, from one
    pass over the CSV and the journal.

    The counts are known only at the end of the pass, and come first in every report: the
    listed recipients wait in a temporary file (pickled: it is our own, never read by
    anything else), not in memory, so memory stays flat however many rows are pending,
    and the counts and the list agree even while a run goes on."""
    counts: Counter[str] = Counter({status: 0 for status in STATUSES})
    with _spooling() as spool:
        for status in recipient_statuses(campaign, journal):
            counts[status.status] += 1
            if _listed(status, with_pending):
                with _spool_errors():
                    pickle.dump(status, spool)
        with _spool_errors():
            spool.seek(0)
        yield counts, _replayed(spool)


@contextlib.contextmanager
def _spooling() -> Iterator[IO[bytes]]:
    with contextlib.ExitStack() as stack:
        with _spool_errors():
            spool = stack.enter_context(tempfile.TemporaryFile())
        yield spool


@contextlib.contextmanager
def _spool_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise RunAborted(f"cannot write a temporary file for the report: {exc}") from exc


def _listed(status: RecipientStatus, with_pending: bool) -> bool:
    if status.status == "pending":
        return with_pending
    return status.status != "sent" or status.partly_refused


def _replayed(spool: IO[bytes]) -> Iterator[RecipientStatus]:
    while True:
        try:
            with _spool_errors():
                status = pickle.load(spool)
        except EOFError:
            return
        yield status


def json_status(counts: Counter[str], recipients: Iterable[RecipientStatus]) -> Iterator[str]:
    """``{"counts": ..., "recipients": [...]}`` as ``json.dumps(..., indent=2,
    ensure_ascii=False)`` writes it, piece by piece: one recipient in memory at a time."""
    head = json.dumps({"counts": dict(counts)}, ensure_ascii=False, indent=2)
    yield head[: -len("\n}")] + ',\n  "recipients": ['
    separator = "\n"
    for status in recipients:
        if status.status == "sent" and not status.refused:
            continue  # listed, with its refusals, only when some recipient refused it
        item = json.dumps(status.as_json(), ensure_ascii=False, indent=2)
        yield separator + "    " + item.replace("\n", "\n    ")
        separator = ",\n"
    yield ("]" if separator == "\n" else "\n  ]") + "\n}"


def _suppression_test(campaign: Campaign) -> Callable[[Recipient], bool]:
    exclusions = load_exclusions(campaign.recipients.exclude)
    if not exclusions:
        return lambda recipient: False
    factory = MessageFactory.prepare(campaign)

    def suppressed(recipient: Recipient) -> bool:
        try:
            return is_suppressed(factory.build(recipient), exclusions)
        except CampaignError:
            return False  # a row that no longer renders was not sent because of the list

    return suppressed


def refused_addresses(journal: Journal | None) -> Iterator[str]:
    """Addresses the server refused permanently (5xx to RCPT TO), each once: a bounce list
    in the format `recipients.exclude` reads."""
    if journal is None:
        return
    seen: set[str] = set()
    for entry in journal.entries():
        for refusal in entry.refused:
            folded = refusal.address.casefold()
            if 500 <= refusal.code < 600 and folded not in seen:
                seen.add(folded)
                yield refusal.address


REPORT_COLUMNS = ("batchmail_status", "batchmail_reply", "batchmail_sent_at")


def write_csv_report(campaign: Campaign, journal: Journal | None, path: Path) -> int:
    """The recipients CSV, row order kept, with each row's status, the server's reply and
    when it was sent appended; every cell safe to open in a spreadsheet. Returns the number
    of rows written. A path the campaign reads from is refused (CampaignError)."""
    refuse_input(campaign, path, "--csv")

    def write(handle: TextIO) -> int:
        writer = csv.writer(handle)
        rows = 0
        for recipient, status in _recipients_with_statuses(campaign, journal):
            if rows == 0:
                writer.writerow(spreadsheet.row([*recipient.fields, *REPORT_COLUMNS]))
            reply = f"{status.code} {status.reply}" if status.code else status.reply
            cells = [*recipient.fields.values(), status.status, reply, status.sent_at]
            writer.writerow(spreadsheet.row(cells))
            rows += 1
        return rows

    try:
        return write_whole(path, write)
    except OSError as exc:
        raise RunAborted(f"cannot write the report {path}: {exc.strerror or exc}") from exc


def export_refused(campaign: Campaign, journal: Journal | None, path: Path) -> int:
    """Write the addresses the server refused permanently in the format ``recipients.exclude``
    reads (see ``suppression.write_addresses``); returns how many. A path the campaign reads
    from is refused (CampaignError)."""
    refuse_input(campaign, path, "--export-failed")
    return write_addresses(path, refused_addresses(journal))


def count_statuses(statuses: Iterator[RecipientStatus]) -> Counter[str]:
    counts: Counter[str] = Counter({status: 0 for status in STATUSES})
    for status in statuses:
        counts[status.status] += 1
    return counts


def _status_of(key: str, row_number: int, entry: JournalEntry | None) -> RecipientStatus:
    if entry is None:
        return RecipientStatus(key, row_number, "pending", None, "", 0, "")
    reply = entry.reply
    others = _other_refusals(entry)
    if others:
        refused = "; ".join(f"{r.address}: {r.code} {r.reply}" for r in others)
        reply = f"{reply} (refused: {refused})" if reply else f"refused: {refused}"
    return RecipientStatus(
        key,
        row_number,
        entry.effective_status,
        entry.code,
        reply,
        entry.attempts,
        entry.message_id,
        bool(entry.refused),
        entry.updated_at if entry.effective_status == "sent" else "",
        entry.refused,
    )


def _other_refusals(entry: JournalEntry) -> tuple[RecipientRefusal, ...]:
    """The refusals the message's own reply does not already say: when every recipient was
    refused, that reply is one of them, and saying it twice helps nobody. Two refusals with
    the same words are both kept: they name different addresses."""
    same = [r for r in entry.refused if (r.code, r.reply) == (entry.code, entry.reply)]
    if len(same) != 1:
        return entry.refused
    return tuple(r for r in entry.refused if r is not same[0])
