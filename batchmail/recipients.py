"""Stream the recipients CSV: encoding, BOM, the key column, duplicate keys.

A key that is an address is compared as one (``addresses.key_identity``): ``Ann@Example.org``
and `` ann@example.org`` are one recipient, a duplicate, and the journal knows a row by that
form, so cleaning up the spreadsheet between runs mails nobody again.

Rows are read one at a time, and duplicate keys are found in bounded memory
(seen_keys.py), so memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from batchmail.addresses import key_identity
from batchmail.campaign import RecipientsConfig
from batchmail.errors import CampaignError, Problem
from batchmail.seen_keys import SeenKeys

# csv's default limit (128 KiB) is lower than a long HTML snippet in a cell could be.
csv.field_size_limit(16 * 1024 * 1024)


@dataclass(frozen=True)
class Recipient:
    row_number: int  # 1-based data row (the header line is not counted)
    key: str  # as compared and journalled (addresses.key_identity), never sent
    fields: Mapping[str, str]  # column -> value, in the CSV's column order


@dataclass(frozen=True)
class Row:
    """One CSV record: the recipient, or the problems that keep it from being one."""

    row_number: int
    line: int  # physical line where the record starts, 1-based, header included
    recipient: Recipient | None
    problems: tuple[Problem, ...] = field(default=())


def read_rows(config: RecipientsConfig) -> Iterator[Row]:
    """Every record of the CSV in order, each with its problems (undecodable, bad shape,
    empty or duplicate key). Raises CampaignError for a file that can't be read at all."""
    name = config.file.name
    try:
        handle = config.file.open("rb")
    except OSError as exc:
        raise CampaignError([Problem(name, f"cannot read: {exc.strerror}")]) from exc
    with handle:
        lines = _DecodedLines(handle, config.encoding)
        reader = csv.reader(lines, strict=False)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise CampaignError([Problem(f"{name}, line 1", f"unreadable header: {exc}")]) from exc
        if lines.bad_lines:
            raise CampaignError([_decode_problem(name, config.encoding, lines, 1, "header")])
        if not header:
            raise CampaignError(
                [Problem(name, "empty file: expected a header row of column names")]
            )
        _check_header(name, header, config.key)
        seen = SeenKeys()
        try:
            yield from _records(name, config, reader, lines, header, seen)
        finally:
            seen.close()


def _records(
    name: str,
    config: RecipientsConfig,
    reader: Iterator[list[str]],
    lines: _DecodedLines,
    header: list[str],
    seen: SeenKeys,
) -> Iterator[Row]:
    key_index = header.index(config.key)
    row_number = 0
    previous_end = reader.line_num  # type: ignore[attr-defined]
    while True:
        start = previous_end + 1
        try:
            values = next(reader, None)
        except csv.Error as exc:
            row_number += 1
            where = f"{name}, row {row_number} (line {start})"
            yield Row(row_number, start, None, (Problem(where, f"unreadable CSV: {exc}"),))
            previous_end = reader.line_num  # type: ignore[attr-defined]
            continue
        if values is None:
            return
        end = reader.line_num  # type: ignore[attr-defined]
        previous_end = end
        if not any(value.strip() for value in values):
            continue  # blank lines are not recipients
        row_number += 1
        where = f"{name}, row {row_number} (line {start})"
        problems: list[Problem] = []
        if lines.bad_lines:
            bad = sorted(line for line in lines.bad_lines if line <= end)
            if bad:
                problems.append(_decode_problem(name, config.encoding, lines, bad[0], where, start))
                lines.bad_lines.difference_update(bad)
        if len(values) != len(header):
            problems.append(
                Problem(where, f"has {len(values)} fields, the header has {len(header)}")
            )
        written = values[key_index] if key_index < len(values) else ""
        key = key_identity(written)
        if not key:
            problems.append(Problem(f"{where}, column {config.key}", "empty key"))
        else:
            first = seen.first_row(key, row_number)
            if first != row_number:
                problems.append(_duplicate(where, config.key, written, key, first))
        recipient = None
        if not problems:
            recipient = Recipient(row_number, key, dict(zip(header, values, strict=True)))
        yield Row(row_number, start, recipient, tuple(problems))


def _duplicate(where: str, column: str, written: str, key: str, first: int) -> Problem:
    same = "" if written == key else f": the same address as {key!r}, ignoring case and spaces"
    return Problem(
        f"{where}, column {column}",
        f"duplicate key {written!r} (first on row {first}{same}); "
        f"every recipient needs its own {column}",
    )


def read_recipients(config: RecipientsConfig) -> Iterator[Recipient]:
    """The recipients, for a CSV already checked: the first bad row raises CampaignError."""
    for row in read_rows(config):
        if row.recipient is None:
            raise CampaignError(row.problems)
        yield row.recipient


def _check_header(name: str, header: list[str], key: str) -> None:
    problems = []
    seen: set[str] = set()
    for index, column in enumerate(header, 1):
        if not column.strip():
            problems.append(Problem(f"{name}, line 1", f"column {index} has no name"))
        elif column in seen:
            problems.append(Problem(f"{name}, line 1", f"column {column!r} appears twice"))
        seen.add(column)
    if key not in header:
        columns = ", ".join(repr(c) for c in header)
        problems.append(
            Problem(
                name,
                f"no column {key!r} (the recipients key); the columns are {columns}. "
                "Set `recipients.key` in the campaign to the column that identifies a recipient.",
            )
        )
    if problems:
        raise CampaignError(problems)


def _decode_problem(
    name: str, encoding: str, lines: _DecodedLines, line: int, where: str, start: int = 1
) -> Problem:
    # The byte and its line go in ``detail``: the message stays the same on every row of
    # a file saved in another encoding, so that the rows are told in one line.
    at = [f"line {line}"] if line != start else []
    at += [lines.bad_detail[line]] if lines.bad_detail.get(line) else []
    return Problem(
        where if where != "header" else f"{name}, line {line}",
        f"bytes that are not valid {encoding}; if the file was saved by a "
        "spreadsheet, set `recipients.encoding` (e.g. cp1252, latin-1, gbk)",
        detail=", ".join(at),
    )


class _DecodedLines:
    """Decode a binary file line by line, noting (not raising on) lines that don't decode,
    so that the problem can be reported with its row."""

    def __init__(self, handle: object, encoding: str) -> None:
        self._handle = handle
        info = codecs.lookup(encoding)
        # utf-8-sig tolerates (and drops) a byte-order mark, as spreadsheets write one.
        self._encoding = "utf-8-sig" if info.name == "utf-8" else info.name
        self._decoder = codecs.getincrementaldecoder(self._encoding)(errors="strict")
        self._line = 0
        self._pending = ""
        self._bad_pending = False
        self._bad_text = ""
        self.bad_lines: set[int] = set()
        self.bad_detail: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        # Raw lines end at the byte 0x0a, which in UTF-16/32 is only half a newline: decode,
        # then hand csv whole text lines, counting lines in the decoded text.
        while "\n" not in self._pending:
            raw = self._handle.readline()  # type: ignore[attr-defined]
            if not raw:
                self._pending += self._decode(b"", final=True)
                break
            self._pending += self._decode(raw, final=False)
        if not self._pending:
            raise StopIteration
        line, newline, self._pending = self._pending.partition("\n")
        self._line += 1
        if self._bad_pending:
            self._bad_pending = False
            self.bad_lines.add(self._line)
            self.bad_detail[self._line] = self._bad_text
        return line + newline

    def _decode(self, raw: bytes, final: bool) -> str:
        try:
            return self._decoder.decode(raw, final=final)
        # Some codecs (punycode, idna) raise a bare UnicodeError, without a position.
        except UnicodeError as exc:
            self._decoder.reset()
            if not self._bad_pending:
                self._bad_pending = True
                self._bad_text = (
                    f"byte 0x{raw[exc.start]:02x} at offset {exc.start + 1}"
                    if isinstance(exc, UnicodeDecodeError) and exc.start < len(raw)
                    else ""
                )
            return _replaced(raw, self._encoding)


def _replaced(raw: bytes, encoding: str) -> str:
    """The text of a line that does not decode, for the row's other checks; some codecs
    (idna, punycode) cannot replace what they cannot read, and ASCII stands in for them."""
    try:
        return raw.decode(encoding, errors="replace")
    except UnicodeError:
        return raw.decode("ascii", errors="replace")
