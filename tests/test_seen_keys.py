"""Duplicate keys are found past the in-memory limit too, where the registry is on disk."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from batchmail import seen_keys
from batchmail.campaign import RecipientsConfig
from batchmail.recipients import read_rows
from batchmail.seen_keys import IN_MEMORY_KEYS, SeenKeys


def test_first_rows_survive_the_move_to_disk() -> None:
    seen = SeenKeys(in_memory=3)
    try:
        assert [seen.first_row(f"k{i}", i) for i in range(1, 6)] == [1, 2, 3, 4, 5]
        # k1 was seen while the registry was a dict; k5 after it moved to SQLite.
        assert seen.first_row("k1", 6) == 1
        assert seen.first_row("k5", 7) == 5
        assert seen.first_row("K5", 8) == 8  # keys are compared exactly, as in the CSV
        assert seen.first_row("k8", 9) == 9
    finally:
        seen.close()


def write_csv(path: Path, rows: int, duplicate_of: int) -> None:
    with path.open("w") as out:
        out.write("email,name\n")
        for number in range(1, rows + 1):
            out.write(f"r{number}@example.org,Reader {number}\n")
        out.write(f"r{duplicate_of}@example.org,Again\n")


def test_a_duplicate_far_down_a_long_file_names_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    rows = IN_MEMORY_KEYS + 5_000
    write_csv(path, rows, duplicate_of=7)
    bad = [row for row in read_rows(RecipientsConfig(path)) if row.problems]
    assert len(bad) == 1
    assert bad[0].row_number == rows + 1
    assert "duplicate key 'r7@example.org' (first on row 7)" in str(bad[0].problems[0])


def test_python_memory_for_keys_stops_growing_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own allocations are not Python's: this bounds the dict, the benchmark
    # measures the whole process. A small limit keeps the traced run short.
    monkeypatch.setattr(seen_keys, "IN_MEMORY_KEYS", 2_000)
    peaks = []
    for rows in (4_000, 40_000):
        path = tmp_path / f"people-{rows}.csv"
        write_csv(path, rows, duplicate_of=1)
        tracemalloc.start()
        for _ in read_rows(RecipientsConfig(path)):
            pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.2, peaks
