"""The journal's side log on a real file: what is written is read back the same, a line cut
short or changed ends what is read and says so, and a log that is not one reads as none or
as damaged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from batchmail.errors import RunAborted
from batchmail.journal_log import Event, LogRead, SideLog, read_log

BOOT = "11111111-2222-4333-8444-555555555555"

# Quotes, backslashes, line ends, control characters, any script, lone surrogates.
texts = st.text(st.characters(exclude_categories=()), max_size=40)
outcomes = st.none() | st.tuples(
    st.sampled_from(["sent", "failed", "deferred", "unknown"]),
    st.none() | st.integers(200, 599),
    texts,
    texts,
)
events = st.builds(Event, texts, st.just("2026-11-27T12:00:00+00:00"), outcomes)


@settings(max_examples=200, deadline=None)
@given(st.lists(events, max_size=8))
def test_every_event_reads_back_as_written(tmp_path_factory, written: list[Event]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("log") / "journal.sqlite3-log"
    log = SideLog(path, 7, BOOT)
    log.append(written)
    log.close(remove=False)
    assert read_log(path) == LogRead(7, BOOT, written, None)


def test_a_line_cut_short_or_changed_ends_what_is_read_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = SideLog(path, 3, BOOT)
    first, second = Event("ann@x.org", "t1"), Event("bob@x.org", "t2", ("sent", 250, "ok", "[]"))
    log.append([first, second])
    log.close(remove=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # the last line without its end
    assert read_log(path) == LogRead(3, BOOT, [first], "line 3 is cut short")
    path.write_bytes(whole.replace(b'["bob', b"\0\0\0\0\0"))  # a page a power cut left blank
    assert read_log(path) == LogRead(3, BOOT, [first], "line 3 is damaged")
    path.write_bytes(whole.replace(b'"ok"', b'"oK"'))  # one byte, still JSON
    assert read_log(path) == LogRead(3, BOOT, [first], "line 3 is damaged")
    lines = whole.split(b"\n")
    path.write_bytes(b"\n".join([lines[0], lines[2], lines[1], b""]))  # lines swapped: both sound
    assert read_log(path) == LogRead(3, BOOT, [second, first], None)
    path.write_bytes(whole.replace(b", 3 ", b", 4 "))  # checked with the generation
    assert read_log(path) == LogRead(4, BOOT, [], "line 2 is damaged")


def test_a_line_cut_at_a_page_boundary_is_what_a_kill_leaves(tmp_path: Path) -> None:
    # The kernel stops a write killed midway only between pages: the lines before are read,
    # and no damage is reported.
    path = tmp_path / "log"
    log = SideLog(path, 1, BOOT)
    log.append([Event(f"person{n}@example.org", "t") for n in range(200)])
    log.close(remove=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:4096])
    read = read_log(path)
    assert read is not None and read.damage is None and 0 < len(read.events) < 200
    path.write_bytes(whole[:4095])
    read = read_log(path)
    assert read is not None and read.damage is not None and "cut short" in read.damage


def test_an_older_log_is_read_without_checksums(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b'["batchmail journal log", 2]\n["ann@x.org", "t1"]\n["bob')
    assert read_log(path) == LogRead(2, None, [Event("ann@x.org", "t1")], None)


def test_starting_over_empties_the_log_under_its_new_generation(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = SideLog(path, 1, BOOT)
    log.append([Event("ann@x.org", "t1")])
    log.prepare_next()
    waiting = read_log(path.with_name("log.next"))
    assert waiting == LogRead(2, BOOT, [], None)  # ready before the transaction commits
    assert read_log(path) == LogRead(1, BOOT, [Event("ann@x.org", "t1")], None)
    log.switch()
    log.append([Event("bob@x.org", "t2")])
    assert read_log(path) == LogRead(2, BOOT, [Event("bob@x.org", "t2")], None)
    assert not path.with_name("log.next").exists()
    log.close(remove=True)
    assert read_log(path) is None and not path.exists()


def test_a_log_with_no_line_moves_on_in_place(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = SideLog(path, 9, BOOT)
    size = path.stat().st_size
    log.prepare_next()
    assert not path.with_name("log.next").exists()
    log.switch()
    assert read_log(path) == LogRead(10, BOOT, [], None)
    assert path.stat().st_size == size  # the same header width
    log.append([Event("ann@x.org", "t1")])
    assert read_log(path) == LogRead(10, BOOT, [Event("ann@x.org", "t1")], None)
    log.close(remove=False)


def test_what_is_not_a_log_reads_as_none_or_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert read_log(path) is None
    path.write_bytes(b"")
    assert read_log(path) == LogRead(0, None, [], "it is empty")
    for content in (b'["batchmail journal log", 4', b'["something else", 4]\n', b"\xff\n"):
        path.write_bytes(content)
        assert read_log(path) == LogRead(0, None, [], "its first line is damaged")


def test_a_log_that_cannot_be_written_aborts_with_the_reason(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    try:
        SideLog(directory / "log", 1, BOOT)
    except RunAborted as exc:
        assert "cannot write the journal's log" in str(exc) and "No such file" in str(exc)
    else:
        raise AssertionError("a log in a missing directory was opened")


FILL_THE_LOG = """
import resource, signal, sys
from pathlib import Path
from batchmail.errors import RunAborted
from batchmail.journal_log import Event, SideLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the write past the limit kills us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
log = SideLog(Path(sys.argv[1]), 1, "11111111-2222-4333-8444-555555555555")
try:
    for number in range(1000):
        log.append([Event(f"person{number}@example.org", "2026-11-27T12:00:00+00:00")])
except RunAborted as exc:
    print(number, exc)
"""


def test_a_full_disk_aborts_with_the_reason_and_what_to_do(tmp_path: Path) -> None:
    # A file size limit: past it, a write fails with EFBIG, as a full disk's with ENOSPC.
    path = tmp_path / "log"
    result = subprocess.run(
        [sys.executable, "-c", FILL_THE_LOG, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    number, _, message = result.stdout.partition(" ")
    assert 0 < int(number) < 1000, result.stdout  # some lines were written, then none
    assert message == (
        f"cannot write the journal's log {path}: File too large "
        "(free some disk space and run again; what was recorded is kept)\n"
    )
    # The limit cut the last line at a page's end, as a kill would: not damage.
    assert read_log(path) == LogRead(
        1,
        "11111111-2222-4333-8444-555555555555",
        [Event(f"person{n}@example.org", "2026-11-27T12:00:00+00:00") for n in range(int(number))],
        None,
    )
