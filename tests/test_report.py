"""`status` reports: the same JSON as a single ``json.dumps``, and memory that does not grow
with the number of rows listed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from campaign_files import batchmail, people, write_campaign

from batchmail.report import STATUSES, RecipientStatus, json_status


def _status(key: str, status: str, code: int | None = None, reply: str = "") -> RecipientStatus:
    return RecipientStatus(key, 1, status, code, reply, 1 if code else 0, "<m@x>" if code else "")


@pytest.mark.parametrize(
    "listed",
    [
        [],
        [_status("sent@example.org", "sent")],  # sent, partly refused: not in the JSON list
        [_status("a@example.org", "pending")],
        [
            _status('Zoë\n"q"@example.org', "failed", 550, "no such user\n\x1b[2J"),
            _status("b@example.org", "sent"),
            _status("c@example.org", "deferred", 451, "try later"),
        ],
    ],
)
def test_json_written_piece_by_piece_is_what_json_dumps_writes(
    listed: list[RecipientStatus],
) -> None:
    counts = Counter({status: index for index, status in enumerate(STATUSES)})
    whole = json.dumps(
        {"counts": dict(counts), "recipients": [s.as_json() for s in listed if s.status != "sent"]},
        ensure_ascii=False,
        indent=2,
    )
    assert "".join(json_status(counts, iter(listed))) == whole


PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _peak_kib(*args: str | Path) -> int:
    """The highest resident memory of ``batchmail ARGS`` (its own process), in KiB."""
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "batchmail", *map(str, args)]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def _append_rows(csv_path: Path, start: int, count: int) -> None:
    with csv_path.open("a", encoding="utf-8") as handle:
        for i in range(start, start + count):
            handle.write(f"person{i}@example.org,Person {i},C{i:07d}\n")


@pytest.mark.slow
def test_status_memory_stays_flat_with_the_rows_it_lists(tmp_path: Path) -> None:
    # One row sent (so there is a journal to read), then every other row pending, listed.
    campaign = write_campaign(tmp_path, people(1), smtp="embedded", html=None)
    assert batchmail("run", campaign).returncode == 0
    csv_path = tmp_path / "people.csv"
    peaks: dict[int, dict[str, int]] = {}
    for rows, added in ((10_000, 10_000), (100_000, 90_000)):
        _append_rows(csv_path, 2 + rows - added, added)  # person1 is the row sent
        peaks[rows] = {
            "text": _peak_kib("status", campaign, "--all"),
            "json": _peak_kib("status", campaign, "--json"),
            "csv": _peak_kib("status", campaign, "--csv", tmp_path / f"report{rows}.csv"),
        }
    listed = json.loads(batchmail("status", campaign, "--json").stdout)["recipients"]
    assert len(listed) == 100_000 and listed[-1]["key"] == "person100001@example.org"
    # Before streaming, 90,000 more pending rows cost about 25 MB (text) and 50 MB (--json).
    for output in ("text", "json", "csv"):
        grown = peaks[100_000][output] - peaks[10_000][output]
        assert grown < 8_000, (output, peaks)
