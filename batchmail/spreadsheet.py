"""Cells of the CSV files batchmail writes for people to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula to Excel, LibreOffice and
Google Sheets, and one starting with a tab or a carriage return can become one: a name
or an address from a CSV or a server (``=1+1@example.org`` is a valid address) would be
run when the report is opened. As OWASP's CSV-injection guidance says, such a cell is
written with a single quote before it, which spreadsheets show as text.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def cell(value: object) -> str:
    """``value`` as a cell no spreadsheet runs as a formula."""
    text = "" if value is None else str(value)
    return QUOTE + text if text.startswith(FORMULA_STARTS) else text


def row(values: Iterable[object]) -> list[str]:
    return [cell(value) for value in values]


def readings(text: str) -> tuple[str, ...]:
    """What a cell read back may have said before ``cell`` wrote it: the text itself, and,
    when it starts with the quote ``cell`` adds, the text without it. An exclusion list
    takes both, so an address stays excluded whichever was meant."""
    if text.startswith(QUOTE) and text[len(QUOTE) :].startswith(FORMULA_STARTS):
        return text, text[len(QUOTE) :]
    return (text,)
