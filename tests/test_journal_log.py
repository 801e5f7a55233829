"""The journal's side log on a real file: what is written is read back the same, a line cut
short ends what is read, and a log that is not one reads as none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from batchmail.errors import RunAborted
from batchmail.journal_log import Event, SideLog, read_log

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
    log = SideLog(path, 7)
    log.append(written)
    log.close(remove=False)
    assert read_log(path) == (7, written)


def test_a_line_cut_short_ends_what_is_read(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = SideLog(path, 3)
    first, second = Event("ann@x.org", "t1"), Event("bob@x.org", "t2", ("sent", 250, "ok", "[]"))
    log.append([first, second])
    log.close(remove=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # the last line without its end
    assert read_log(path) == (3, [first])
    path.write_bytes(whole.replace(b'["bob', b"\0\0\0\0\0"))  # a page a power cut left blank
    assert read_log(path) == (3, [first])


def test_starting_over_empties_the_log_under_its_new_generation(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = SideLog(path, 1)
    log.append([Event("ann@x.org", "t1")])
    log.restart(2)
    log.append([Event("bob@x.org", "t2")])
    assert read_log(path) == (2, [Event("bob@x.org", "t2")])
    log.close(remove=True)
    assert read_log(path) is None and not path.exists()


def test_what_is_not_a_log_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert read_log(path) is None
    for content in (b"", b'["batchmail journal log", 4', b'["something else", 4]\n', b"\xff\n"):
        path.write_bytes(content)
        assert read_log(path) is None


def test_a_log_that_cannot_be_written_aborts_with_the_reason(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    try:
        SideLog(directory / "log", 1)
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
log = SideLog(Path(sys.argv[1]), 1)
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
    assert read_log(path) == (
        1,
        [Event(f"person{n}@example.org", "2026-11-27T12:00:00+00:00") for n in range(int(number))],
    )
