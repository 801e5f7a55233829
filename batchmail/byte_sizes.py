"""Sizes in bytes as a campaign file writes them: ``25000000``, ``"25MB"``, ``"10 MiB"``.

Kept strict: a number of bytes, or a number and one of the units below (decimal kB/MB/GB
as mail providers state their limits, binary KiB/MiB/GiB), nothing else.
"""

from __future__ import annotations

import re

UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}
_SIZE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?) ?([A-Za-z]{1,3})")


def parse_size(value: object) -> int | str:
    """The number of bytes ``value`` says, or why it says none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else f"expected a size of at least 0 bytes, got {value}"
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and match[2].upper() in UNITS:
            return int(float(match[1]) * UNITS[match[2].upper()])
    return (
        f"expected a size: a number of bytes or a number and a unit "
        f"(e.g. 25MB, 10 MiB; units: B, kB, MB, GB, KiB, MiB, GiB), got {value!r}"
    )


def describe_size(size: int) -> str:
    """``25 MB``, ``1.05 MB`` for a person: to a hundredth of the unit."""
    for unit in ("GB", "MB", "kB"):
        scale = UNITS[unit.upper()]
        if size >= scale:
            return f"{size / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"
