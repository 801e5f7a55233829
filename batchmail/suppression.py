"""Addresses that must never be mailed: `recipients.exclude` files (one address per line, or
a CSV with an `email` column), and the same format written back by `status --export-failed`.

Matching compares addresses as addresses (``addresses.identity``): in any letter case, with
the domain in its Unicode or its IDNA ("xn--") form, an address on the list is never sent to,
whether it is a row's key or any of its recipients (To, Cc or Bcc, as the envelope has them).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from batchmail import spreadsheet
from batchmail.addresses import key_identity
from batchmail.errors import CampaignError, Problem, RunAborted
from batchmail.outcomes import ComposedMessage
from batchmail.private_files import write_whole

EMAIL_COLUMN = "email"


def load_exclusions(paths: Iterable[Path]) -> frozenset[str]:
    addresses: set[str] = set()
    problems: list[Problem] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            problems.append(Problem(str(path), f"cannot read the exclusion list: {exc.strerror}"))
            continue
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(
                    path.name,
                    f"not UTF-8 text (byte {exc.start}); save the exclusion list as UTF-8",
                )
            )
            continue
        if path.suffix.lower() == ".csv":
            found = _csv_addresses(path, text, problems)
        else:
            found = _line_addresses(text)
        addresses.update(_compared(address) for address in found)
    if problems:
        raise CampaignError(problems)
    return frozenset(addresses)


def is_suppressed(message: ComposedMessage, exclusions: frozenset[str]) -> bool:
    if not exclusions:
        return False
    return _compared(message.key) in exclusions or any(
        _compared(address) in exclusions for address in message.envelope.rcpt_tos
    )


def _compared(text: str) -> str:
    """The form an exclusion and an address meet in: an address's identity (a key that is
    no address, trimmed), case-folded."""
    return key_identity(text).casefold()


def write_addresses(path: Path, addresses: Iterable[str]) -> int:
    """Write addresses in the format ``load_exclusions`` reads: a CSV with an ``email`` column
    when the file name ends in .csv (its cells safe in a spreadsheet, read back as written),
    else one per line; the file replaced whole, owner-only (``private_files``)."""

    def write(handle: TextIO) -> int:
        count = 0
        writer = csv.writer(handle) if path.suffix.lower() == ".csv" else None
        if writer:
            writer.writerow([EMAIL_COLUMN])
        for address in addresses:
            if writer:
                writer.writerow([spreadsheet.cell(address)])
            else:
                handle.write(address + "\n")
            count += 1
        return count

    try:
        return write_whole(path, write)
    except OSError as exc:
        raise RunAborted(f"cannot write {path}: {exc.strerror or exc}") from exc


def _csv_addresses(path: Path, text: str, problems: list[Problem]) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or EMAIL_COLUMN not in reader.fieldnames:
        problems.append(Problem(path.name, f"an exclusion CSV needs an {EMAIL_COLUMN!r} column"))
        return []
    cells = (row[EMAIL_COLUMN].strip() for row in reader if (row.get(EMAIL_COLUMN) or "").strip())
    return [address for text in cells for address in spreadsheet.readings(text)]


def _line_addresses(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]
