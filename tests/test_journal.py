"""The journal on real SQLite files: outcomes, attempts, crashes and unwritable storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

import batchmail.journal as journal_module
from batchmail.errors import RunAborted
from batchmail.journal import SCHEMA_VERSION, Journal
from batchmail.journal_log import log_path
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, RecipientRefusal, Status

# Builds the same messages as message() below, for the child processes.
CHILD_PRELUDE = """
import sys
from pathlib import Path
from batchmail.errors import RunAborted
from batchmail.journal import Journal
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, Status

def message(key, row):
    return ComposedMessage(
        row, key, Envelope("news@example.com", (key,)), f"<{row}@example.com>", (b"data",)
    )

path = Path(sys.argv[1])
"""


def message(key: str, row: int, rcpt_tos: tuple[str, ...] | None = None) -> ComposedMessage:
    envelope = Envelope("news@example.com", rcpt_tos or (key,))
    return ComposedMessage(row, key, envelope, f"<{row}@example.com>", (b"data",))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".batchmail" / "welcome" / "journal.sqlite3"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal.open(path) as opened:
        yield opened


def integrity(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize("status", list(Status))
def test_every_status_round_trips_through_a_reopen(path: Path, status: Status) -> None:
    refusal = RecipientRefusal("cc@example.com", 550, "5.1.1 no such user")
    outcome = Outcome(status, 250 if status is Status.SENT else None, "the reply", (refusal,))
    sent = message("ann@example.com", 7, ("ann@example.com", "cc@example.com"))
    with Journal.open(path) as journal:
        journal.record(sent, outcome)
    with Journal.open(path) as journal:
        entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.key, entry.row_number, entry.status) == ("ann@example.com", 7, status.value)
    assert (entry.code, entry.reply, entry.refused) == (outcome.code, "the reply", (refusal,))
    assert (entry.message_id, entry.mail_from) == ("<7@example.com>", "news@example.com")
    assert entry.rcpt_tos == ("ann@example.com", "cc@example.com")
    assert entry.attempts == 1
    assert entry.effective_status == status.value
    assert datetime.fromisoformat(entry.updated_at).tzinfo == UTC


def test_in_flight_reads_as_unknown_and_drops_the_earlier_reply(journal: Journal) -> None:
    journal.record(message("ann@example.com", 1), Outcome(Status.DEFERRED, 451, "try later"))
    journal.mark_in_flight(message("ann@example.com", 1))
    entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.status, entry.effective_status) == ("in_flight", "unknown")
    assert (entry.code, entry.reply) == (None, "")
    assert journal.counts() == {"sent": 0, "failed": 0, "deferred": 0, "unknown": 1}


def test_a_failure_before_the_data_counts_as_an_attempt(journal: Journal) -> None:
    journal.record(message("ann@example.com", 1), Outcome(Status.DEFERRED, 450, "busy"))
    assert journal.get("ann@example.com").attempts == 1  # type: ignore[union-attr]


def test_in_flight_then_its_outcome_is_one_attempt(journal: Journal) -> None:
    journal.mark_in_flight(message("ann@example.com", 1))
    journal.record(message("ann@example.com", 1), Outcome(Status.SENT, 250, "queued"))
    entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.status, entry.attempts, entry.code) == ("sent", 1, 250)


def test_retries_add_one_attempt_each_and_keep_the_first_attempt_time(journal: Journal) -> None:
    ann = message("ann@example.com", 1)
    refusal = RecipientRefusal("ann@example.com", 450, "mailbox busy")
    journal.record(ann, Outcome(Status.DEFERRED, 450, "busy", (refusal,)))  # before data
    first = journal.get("ann@example.com")
    journal.mark_in_flight(ann)
    journal.record(ann, Outcome(Status.DEFERRED, 451, "greylisted"))
    journal.mark_in_flight(ann)
    journal.record(ann, Outcome(Status.SENT, 250, "queued"))
    entry = journal.get("ann@example.com")
    assert first is not None and entry is not None
    assert (entry.status, entry.attempts, entry.reply, entry.refused) == ("sent", 3, "queued", ())
    assert entry.first_attempt_at == first.first_attempt_at


def test_an_entry_recorded_sent_cannot_be_sent_again(journal: Journal) -> None:
    ann = message("ann@example.com", 1)
    journal.record(ann, Outcome(Status.SENT, 250, "queued"))
    with pytest.raises(ValueError, match="already records it as sent"):
        journal.mark_in_flight(ann)
    with pytest.raises(ValueError, match="already records it as sent"):
        journal.record(ann, Outcome(Status.FAILED, 550, "no"))
    entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.status, entry.attempts) == ("sent", 1)


def test_entries_stream_in_row_order(journal: Journal) -> None:
    # Neither insertion nor key order matches row order.
    for key, row in (("b@example.com", 3), ("c@example.com", 1), ("a@example.com", 2)):
        journal.record(message(key, row), Outcome(Status.SENT, 250, "ok"))
    entries = journal.entries()
    assert not isinstance(entries, Sequence)  # a cursor, not a list loaded whole
    assert [e.row_number for e in entries] == [1, 2, 3]


def test_get_on_a_missing_key_is_none(journal: Journal) -> None:
    journal.record(message("ann@example.com", 1), Outcome(Status.SENT, 250, "ok"))
    assert journal.get("bob@example.com") is None


def test_counts_use_effective_statuses(journal: Journal) -> None:
    outcomes = [Status.SENT, Status.SENT, Status.FAILED, Status.DEFERRED, Status.UNKNOWN]
    for row, status in enumerate(outcomes, start=1):
        journal.record(message(f"r{row}@example.com", row), Outcome(status, None, ""))
    journal.mark_in_flight(message("r9@example.com", 9))
    assert journal.counts() == {"sent": 2, "failed": 1, "deferred": 1, "unknown": 2}


@pytest.mark.parametrize(
    ("status", "plain", "with_unknown"),
    [
        (Status.SENT, False, False),
        (Status.FAILED, True, True),
        (Status.DEFERRED, True, True),
        (Status.UNKNOWN, False, True),
    ],
)
def test_resendable(journal: Journal, status: Status, plain: bool, with_unknown: bool) -> None:
    journal.record(message("ann@example.com", 1), Outcome(status, None, ""))
    entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.resendable(), entry.resendable(include_unknown=True)) == (plain, with_unknown)


def test_in_flight_is_resendable_only_with_unknown(journal: Journal) -> None:
    journal.mark_in_flight(message("ann@example.com", 1))
    entry = journal.get("ann@example.com")
    assert entry is not None
    assert (entry.resendable(), entry.resendable(include_unknown=True)) == (False, True)


def test_reopening_keeps_entries_and_meta(path: Path) -> None:
    with Journal.open(path) as journal:
        journal.record(message("ann@example.com", 1), Outcome(Status.FAILED, 550, "no such user"))
        journal.mark_in_flight(message("bob@example.com", 2))
        journal.set_meta("campaign_name", "welcome")
        journal.set_meta("campaign_name", "welcome-2")
        created_at = journal.get_meta("created_at")
    with Journal.open(path) as journal:
        assert [(e.key, e.status) for e in journal.entries()] == [
            ("ann@example.com", "failed"),
            ("bob@example.com", "in_flight"),
        ]
        assert journal.get_meta("campaign_name") == "welcome-2"
        assert journal.get_meta("created_at") == created_at
        assert journal.get_meta("fingerprint") is None
    assert created_at is not None and datetime.fromisoformat(created_at).tzinfo == UTC


def test_the_file_is_in_wal_mode_with_the_schema_version(journal: Journal, path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    finally:
        connection.close()


def test_a_kill_while_in_flight_reopens_as_unknown(path: Path) -> None:
    child = (
        CHILD_PRELUDE
        + """
import time
journal = Journal.open(path)
journal.record(message("ann@example.com", 1), Outcome(Status.SENT, 250, "queued"))
journal.mark_in_flight(message("bob@example.com", 2))
print("in flight", flush=True)
time.sleep(60)
"""
    )
    kill_when_it_says(child, path, "in flight")

    assert integrity(path) == "ok"
    readonly = Journal.open_readonly(path)
    assert readonly is not None
    with readonly:
        assert readonly.counts() == {"sent": 1, "failed": 0, "deferred": 0, "unknown": 1}
    with Journal.open(path) as journal:
        bob = journal.get("bob@example.com")
        assert bob is not None
        assert (bob.effective_status, bob.attempts) == ("unknown", 1)
        assert journal.get("ann@example.com").status == "sent"  # type: ignore[union-attr]
    assert integrity(path) == "ok"


def test_a_journal_path_that_is_a_directory_aborts(path: Path) -> None:
    # Tests run as root, which ignores permission bits: a directory in the way is unwritable
    # whatever the user.
    path.mkdir(parents=True)
    with pytest.raises(RunAborted, match="unable to open database file") as caught:
        Journal.open(path)
    assert f"cannot open the journal {path}" in str(caught.value)


def test_a_journal_directory_that_cannot_be_made_aborts(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    path = tmp_path / "state" / "welcome" / "journal.sqlite3"
    with pytest.raises(RunAborted, match="cannot create the journal .*journal.sqlite3"):
        Journal.open(path)


def test_a_write_past_the_file_size_limit_aborts_and_keeps_what_was_recorded(path: Path) -> None:
    # RLIMIT_FSIZE makes every write past the limit fail, as a full disk would, in a child
    # process only and without needing a mount.
    child = (
        CHILD_PRELUDE
        + """
import resource, signal
journal = Journal.open(path)
journal.record(message("first@example.com", 1), Outcome(Status.SENT, 250, "queued"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    for row in range(2, 10_000):
        journal.record(message(f"r{row}@example.com", row), Outcome(Status.FAILED, 550, "x" * 2000))
except RunAborted as exc:
    print(exc)
    sys.exit(0)
sys.exit(1)
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cannot write the journal {path}: disk I/O error")
    assert "disk is not full" in result.stdout
    assert integrity(path) == "ok"
    with Journal.open(path) as journal:
        assert journal.get("first@example.com").status == "sent"  # type: ignore[union-attr]
        assert journal.counts()["failed"] > 0


def run_on_small_tmpfs(mountpoint: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script with a 128 KiB tmpfs at mountpoint, in a mount namespace of its own.

    Skips where unshare or mount are not allowed (no root, or a locked-down container).
    """
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mountpoint.mkdir(parents=True)
    wrapper = 'mount -t tmpfs -o size=128k tmpfs "$MOUNTPOINT" || exit 97\n' + script
    env = {**os.environ, "MOUNTPOINT": str(mountpoint), "PYTHON": sys.executable}
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", wrapper],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if result.returncode == 97 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {result.stderr.strip()}")
    return result


def test_a_full_disk_aborts_with_a_clear_message(tmp_path: Path) -> None:
    script_path = tmp_path / "fill.py"
    script_path.write_text(
        CHILD_PRELUDE
        + """
journal = Journal.open(path)
try:
    for row in range(1, 10_000):
        journal.record(message(f"r{row}@example.com", row), Outcome(Status.FAILED, 550, "x" * 2000))
except RunAborted as exc:
    print(exc)
    print(journal.counts()["failed"])
    sys.exit(0)
sys.exit(1)
"""
    )
    mountpoint = tmp_path / "small"
    path = mountpoint / "journal.sqlite3"
    result = run_on_small_tmpfs(
        mountpoint, f'"$PYTHON" {script_path} "$MOUNTPOINT/journal.sqlite3"'
    )
    assert result.returncode == 0, result.stderr
    message_line, recorded = result.stdout.splitlines()
    assert message_line.startswith(f"cannot write the journal {path}: database or disk is full")
    assert "free some disk space" in message_line
    assert int(recorded) > 0  # what was committed before the disk filled is still there


def test_a_read_only_filesystem_aborts(tmp_path: Path) -> None:
    script_path = tmp_path / "try.py"
    script_path.write_text(
        CHILD_PRELUDE
        + """
try:
    with Journal.open(path) as journal:
        if sys.argv[2] == "create":
            journal.record(message("ann@example.com", 1), Outcome(Status.SENT, 250, "ok"))
        else:
            journal.mark_in_flight(message("bob@example.com", 2))
except RunAborted as exc:
    print(exc)
"""
    )
    mountpoint = tmp_path / "small"
    path = mountpoint / "journal.sqlite3"
    script = (
        f'"$PYTHON" {script_path} "$MOUNTPOINT/journal.sqlite3" create || exit 1\n'
        'mount -o remount,ro "$MOUNTPOINT" || exit 97\n'
        f'"$PYTHON" {script_path} "$MOUNTPOINT/journal.sqlite3" write\n'
    )
    result = run_on_small_tmpfs(mountpoint, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cannot open the journal {path}: unable to open database")
    assert "writable" in result.stdout


def test_a_locked_journal_aborts(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    # Another process holding the write lock longer than we wait (shortened for the test).
    monkeypatch.setattr(journal_module, "BUSY_TIMEOUT_SECONDS", 0.1)
    with Journal.open(path) as journal:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(RunAborted, match="database is locked .*another process"):
                journal.mark_in_flight(message("ann@example.com", 1))
        finally:
            other.close()
        assert journal.get("ann@example.com") is None


def test_a_file_that_is_not_a_database_aborts_and_is_left_alone(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("name,email\nAnn,ann@example.com\n" * 100)
    before = path.read_bytes()
    with pytest.raises(RunAborted, match="is not a batchmail journal"):
        Journal.open(path)
    with pytest.raises(RunAborted, match="is not a batchmail journal"):
        Journal.open_readonly(path)
    assert path.read_bytes() == before


def test_another_programs_database_aborts_and_is_left_alone(path: Path) -> None:
    path.parent.mkdir(parents=True)
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE contacts (email TEXT)")
    other.commit()
    other.close()
    with pytest.raises(RunAborted, match="is not a batchmail journal"):
        Journal.open(path)
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not made WAL
    finally:
        other.close()


def test_a_journal_from_a_newer_batchmail_aborts(path: Path) -> None:
    Journal.open(path).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(RunAborted, match="newer batchmail"):
        Journal.open(path)


def test_a_damaged_journal_aborts(path: Path) -> None:
    with Journal.open(path) as journal:
        for row in range(1, 200):
            journal.record(message(f"r{row}@example.com", row), Outcome(Status.SENT, 250, "ok"))
    page_size = 4096
    data = bytearray(path.read_bytes())
    data[page_size:] = b"\xff" * (len(data) - page_size)  # every page but the schema's
    path.write_bytes(bytes(data))
    with pytest.raises(RunAborted, match="malformed .*damaged"), Journal.open(path) as journal:
        list(journal.entries())


def test_open_readonly_without_a_journal_is_none_and_creates_nothing(path: Path) -> None:
    assert Journal.open_readonly(path) is None
    assert not path.parent.exists()


def test_open_readonly_of_a_blank_file_is_none(path: Path) -> None:
    # What a run killed before its first commit can leave behind.
    path.parent.mkdir(parents=True)
    path.touch()
    assert Journal.open_readonly(path) is None
    assert path.read_bytes() == b""


def test_open_readonly_reads_beside_a_writer_and_refuses_writes(
    journal: Journal, path: Path
) -> None:
    journal.record(message("ann@example.com", 1), Outcome(Status.SENT, 250, "ok"))
    readonly = Journal.open_readonly(path)
    assert readonly is not None
    with readonly:
        journal.record(message("bob@example.com", 2), Outcome(Status.FAILED, 550, "no"))
        assert [e.key for e in readonly.entries()] == ["ann@example.com", "bob@example.com"]
        with pytest.raises(ValueError, match="read-only"):
            readonly.mark_in_flight(message("cy@example.com", 3))


def test_a_closed_journal_refuses_use(path: Path) -> None:
    journal = Journal.open(path)
    journal.close()
    journal.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="is closed"):
        journal.get("ann@example.com")


def test_answered_outcomes_ride_along_with_the_next_mark(path: Path) -> None:
    first, second = message("a@x.org", 1), message("b@x.org", 2)
    with Journal.open(path) as journal:
        journal.mark_in_flight_many([first])
        journal.mark_in_flight_many([second], [(first, Outcome(Status.SENT, 250, "2.0.0 ok"))])
    with Journal.open(path) as reopened:  # what a kill right now would leave
        one, two = reopened.get("a@x.org"), reopened.get("b@x.org")
        assert one is not None and two is not None
        assert (one.status, one.attempts, one.code) == (Status.SENT, 1, 250)
        assert (two.status, two.attempts) == ("in_flight", 1)  # read as unknown


# --- reservations: one sync for a batch of pipelined DATA marks --------------------------

RESERVING_CHILD = (
    CHILD_PRELUDE
    + """
import time
journal = Journal.open(path)
ann, bob, cy = (message(k, n) for n, k in enumerate(("ann@x.org", "bob@x.org", "cy@x.org"), 1))
journal.record(cy, Outcome(Status.DEFERRED, 451, "greylisted"))  # a resend's earlier try
journal.reserve([ann, bob, cy])
journal.mark_in_flight_many([ann])
journal.mark_in_flight_many([bob], [(ann, Outcome(Status.SENT, 250, "queued"))])
print("bob's data is out", flush=True)
time.sleep(60)
"""
)


def killed_while_reserved(path: Path) -> None:
    """ann sent, bob in flight, cy reserved but never marked, and then SIGKILL."""
    kill_when_it_says(RESERVING_CHILD, path, "bob's data is out")


def kill_when_it_says(child: str, path: Path, line: str) -> None:
    """Run ``child`` on the journal at ``path``; SIGKILL it once it prints ``line``."""
    process = subprocess.Popen(
        [sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == line + "\n"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
        if process.stdout:
            process.stdout.close()


def statuses(journal: Journal) -> dict[str, tuple[str, int]]:
    return {e.key: (e.status, e.attempts) for e in journal.entries()}


def test_a_kill_leaves_a_reserved_message_as_it_was_on_the_same_boot(path: Path) -> None:
    killed_while_reserved(path)
    expected = {
        "ann@x.org": ("sent", 1),
        "bob@x.org": ("in_flight", 1),  # its data was out: unknown
        "cy@x.org": ("deferred", 1),  # reserved, never marked: its data never went out
    }
    readonly = Journal.open_readonly(path)
    assert readonly is not None
    with readonly:
        assert statuses(readonly) == expected
        assert readonly.get("cy@x.org").status == "deferred"  # type: ignore[union-attr]
    with Journal.open(path) as journal:  # a writer settles what the kill left
        assert statuses(journal) == expected
    assert reserved_rows(path) == []


def power_cut(path: Path, keep_log_lines: int) -> None:
    """Make the journal left by ``killed_while_reserved`` look as a power cut would leave it:
    its reservations from an earlier boot of the machine, and of its side log (written
    without a sync) only the header and the first ``keep_log_lines`` lines, the next one cut
    short."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE reserved SET boot_id = ?", (EARLIER_BOOT,))
    connection.close()
    log = log_path(path)
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4  # the header; ann marked; ann sent and bob marked (one write)
    header = json.loads(lines[0])
    kept = [
        (json.dumps([*header[:2], EARLIER_BOOT]) + "\n").encode(),
        *lines[1 : 1 + keep_log_lines],
    ]
    log.write_bytes(b"".join(kept) + lines[1 + keep_log_lines][:7])


EARLIER_BOOT = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        # All the side log lost: every reserved message may have gone. None reads as pending.
        (
            0,
            {
                "ann@x.org": ("in_flight", 1),
                "bob@x.org": ("in_flight", 1),
                "cy@x.org": (
                    "in_flight",
                    2,
                ),  # the greylisted try, and this one, which may have gone
            },
        ),
        # ann's mark and outcome kept; bob's mark cut short.
        (
            2,
            {
                "ann@x.org": ("sent", 1),
                "bob@x.org": ("in_flight", 1),
                "cy@x.org": ("in_flight", 2),
            },
        ),
    ],
)
def test_after_a_restart_a_reserved_message_reads_as_in_flight(
    path: Path, kept: int, expected: dict[str, tuple[str, int]]
) -> None:
    # A power cut may lose the side log's lines, written without a sync: a reservation from
    # an earlier boot of the machine may hide a message whose data went out.
    killed_while_reserved(path)
    power_cut(path, kept)
    unknown = sum(status == "in_flight" for status, _ in expected.values())
    readonly = Journal.open_readonly(path)
    assert readonly is not None
    with readonly:
        assert statuses(readonly) == expected
        counts = readonly.counts()
        assert (counts["unknown"], counts["sent"]) == (unknown, 3 - unknown)
        assert readonly.get("cy@x.org").effective_status == "unknown"  # type: ignore[union-attr]
        assert readonly.sent_since("2000-01-01T00:00:00+00:00")[0] == 3
    with Journal.open(path) as journal:
        assert statuses(journal) == expected
        entry = journal.get("bob@x.org")
        assert entry is not None and entry.message_id == "<2@example.com>"
        assert entry.rcpt_tos == ("bob@x.org",)
    assert reserved_rows(path) == []


def test_a_kill_leaves_the_side_log_read_as_written(path: Path) -> None:
    # The marks and outcomes after a reservation are lines of the side log, not yet in the
    # SQLite file when the process is killed: a reader and the next writer read them there.
    killed_while_reserved(path)
    assert log_path(path).exists()
    assert raw_statuses(path) == {"cy@x.org": "deferred"}
    with Journal.open(path) as journal:
        assert statuses(journal)["ann@x.org"] == ("sent", 1)
    assert raw_statuses(path) == {
        "ann@x.org": "sent",
        "bob@x.org": "in_flight",
        "cy@x.org": "deferred",
    }
    assert not log_path(path).exists()  # closed with nothing left to fold


def test_a_log_already_folded_is_not_read_again(path: Path) -> None:
    # Killed after the fold's commit and before the side log started over: the lines are in
    # the journal already, and must not count an attempt twice.
    killed_while_reserved(path)
    lines = log_path(path).read_bytes()
    with Journal.open(path):
        pass
    log_path(path).write_bytes(lines)
    readonly = Journal.open_readonly(path)
    assert readonly is not None
    with readonly:
        assert statuses(readonly)["bob@x.org"] == ("in_flight", 1)
    with Journal.open(path) as journal:
        assert statuses(journal)["bob@x.org"] == ("in_flight", 1)


def raw_statuses(path: Path) -> dict[str, str]:
    connection = sqlite3.connect(path)
    try:
        return dict(connection.execute("SELECT key, status FROM entries"))
    finally:
        connection.close()


def test_marks_after_a_reservation_keep_the_journal_exact(journal: Journal, path: Path) -> None:
    ann, bob = message("ann@x.org", 1), message("bob@x.org", 2)
    journal.reserve([ann, bob])
    assert reserved_rows(path) == ["ann@x.org", "bob@x.org"]
    assert journal.get("ann@x.org") is None  # reserved is not attempted
    journal.mark_in_flight_many([ann])
    journal.mark_in_flight_many([bob], [(ann, Outcome(Status.SENT, 250, "ok"))])
    journal.record_many([(bob, Outcome(Status.FAILED, 554, "no"))], durable=False)
    assert raw_statuses(path) == {}  # in the side log only, so far
    assert statuses(journal) == {"ann@x.org": ("sent", 1), "bob@x.org": ("failed", 1)}
    assert reserved_rows(path) == []  # folded for the read, the reservations with it
    with pytest.raises(ValueError, match="already records it as sent"):
        journal.reserve([ann])  # the guard, before any data could go
    with pytest.raises(ValueError, match="already records it as sent"):
        journal.mark_in_flight_many([ann])
    assert statuses(journal)["ann@x.org"] == ("sent", 1)


def test_closing_forgets_reservations_that_were_never_marked(path: Path) -> None:
    with Journal.open(path) as journal:
        journal.reserve([message("ann@x.org", 1), message("bob@x.org", 2)])
        journal.mark_in_flight_many([message("ann@x.org", 1)])
    assert reserved_rows(path) == []


def test_closing_after_writes_without_a_sync_ends_with_a_synced_write(path: Path) -> None:
    # The last outcomes of a reserved batch are written without a sync; the synced write
    # at close puts them on the disk with it.
    ann = message("ann@x.org", 1)
    with Journal.open(path) as journal:
        journal.reserve([ann])
        journal.mark_in_flight_many([ann])
        journal.record_many([(ann, Outcome(Status.SENT, 250, "ok"))], durable=False)
        assert journal.get_meta("synced_at") is None
    with Journal.open(path) as journal:
        assert journal.get_meta("synced_at") is not None
        assert statuses(journal) == {"ann@x.org": ("sent", 1)}


def test_a_version_1_journal_is_upgraded_when_written(path: Path) -> None:
    with Journal.open(path) as journal:
        journal.record(message("ann@x.org", 1), Outcome(Status.SENT, 250, "ok"))
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("DROP TABLE reserved")
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    readonly = Journal.open_readonly(path)  # read as it is, never written
    assert readonly is not None
    with readonly:
        assert statuses(readonly) == {"ann@x.org": ("sent", 1)}
    with Journal.open(path) as journal:
        journal.reserve([message("bob@x.org", 2)])
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        check.close()
    assert reserved_rows(path) == []


def reserved_rows(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [key for (key,) in connection.execute("SELECT key FROM reserved ORDER BY key")]
    finally:
        connection.close()
