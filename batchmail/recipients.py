"""Stream the recipients CSV: encoding, BOM, the key column, duplicate keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipient:
    row_number: int  # 1-based data row (the header line is not counted)
    key: str
    fields: Mapping[str, str]  # column -> value, in the CSV's column order
