"""A damaged journal is refused, never read as blank: a real `batchmail run` is killed mid-batch
(or left to finish), its state files are deleted or altered, and the next `run` and `status`
stop with exit 3 and say what is wrong, the server receiving nothing; with
--allow-damaged-journal they go on as the README says. Whatever the damage, batchmail either
refuses or sends nobody the journal recorded as sent."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from campaign_files import batchmail, people, status_json, write_campaign
from journal_probe import journal_file, statuses
from servers import RecordingHandler, SmtpTestServer, StartServer

from batchmail.errors import RunAborted
from batchmail.journal import Journal

RECIPIENTS = 80
STALL_AT = 30  # the run is killed while the server holds this many messages and one more


class StallOnceHandler(RecordingHandler):
    """Accepts messages, but never answers the one after the first ``after``; ``stalled`` is
    set when it arrives. Later connections are served as usual."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.stalled = threading.Event()

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        if not self.stalled.is_set() and len(self.messages) >= self.after:
            self.stalled.set()
            await asyncio.get_running_loop().create_future()  # cancelled at the hang-up
        return None


def received(server: SmtpTestServer) -> collections.Counter[str]:
    return collections.Counter(m.rcpt_tos[0] for m in server.handler.messages)


def killed_mid_batch(
    tmp_path: Path, start_smtp_server: StartServer, umask: int | None = None
) -> tuple[Path, SmtpTestServer]:
    """A campaign whose `batchmail run` was SIGKILLed with a pipelined batch half sent: its
    side log holds the marks and outcomes of the batch, its WAL the rest."""
    handler = StallOnceHandler(STALL_AT)
    server = start_smtp_server(handler, mode="pipelining")
    campaign = write_campaign(tmp_path, people(RECIPIENTS), server=server)
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", "run", str(campaign), "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=-1 if umask is None else umask,
    )
    try:
        assert handler.stalled.wait(60), "the run never reached the stalling message"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return campaign, server


def state_dir(campaign: Path) -> Path:
    return journal_file(campaign).parent


def cut(path: Path) -> None:
    """Truncate the file in the middle of a line (not at a page's end, as a kill might)."""
    size = path.stat().st_size // 2
    os.truncate(path, size - 1 if size % 4096 == 0 else size)


def change_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b'"sent"') + 2  # in an outcome line: still valid JSON
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def damage_wal_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"\0" * 7)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "side log deleted": (
        lambda state: (state / "journal.sqlite3-log").unlink(),
        "its side log journal.sqlite3-log is missing",
    ),
    "side log emptied": (
        lambda state: (state / "journal.sqlite3-log").write_bytes(b""),
        "its side log journal.sqlite3-log is damaged (it is empty)",
    ),
    "side log cut short": (
        lambda state: cut(state / "journal.sqlite3-log"),
        "is cut short",
    ),
    "one byte of the side log changed": (
        lambda state: change_one_byte(state / "journal.sqlite3-log"),
        "is damaged (line",
    ),
    "WAL deleted": (
        lambda state: (state / "journal.sqlite3-wal").unlink(),
        "has-sent-mail records that this campaign has sent mail",
    ),
    "WAL header damaged": (
        lambda state: damage_wal_header(state / "journal.sqlite3-wal"),
        "has-sent-mail records that this campaign has sent mail",
    ),
    "main file deleted, side log kept": (
        lambda state: [(state / n).unlink() for n in ("journal.sqlite3", "journal.sqlite3-wal")],
        "the file is missing",
    ),
}
LOG_DAMAGES = [name for name in DAMAGES if "side log" in name and "main" not in name]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_journal_is_refused_and_nothing_is_sent(
    tmp_path: Path, start_smtp_server: StartServer, damage: str
) -> None:
    campaign, server = killed_mid_batch(tmp_path, start_smtp_server)
    recorded = statuses(journal_file(campaign))
    sent = {key for key, status in recorded.items() if status == "sent"}
    assert len(sent) == STALL_AT
    alter, says = DAMAGES[damage]
    alter(state_dir(campaign))
    before = len(server.handler.messages)

    for command in ("run", "status", "resend"):
        result = batchmail(command, campaign)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert "is damaged" in result.stderr and says in result.stderr, result.stderr
        assert "--allow-damaged-journal" in result.stderr and "Traceback" not in result.stderr
    assert len(server.handler.messages) == before  # nothing sent

    result = batchmail("run", campaign, "--quiet", "--allow-damaged-journal")
    assert result.returncode in (0, 1), result.stderr
    counts = received(server)
    everyone = {row["email"] for row in people(RECIPIENTS)}
    status = status_json(campaign)
    unknown = {r["key"] for r in status["recipients"] if r["status"] == "unknown"}
    assert status["counts"]["pending"] == 0
    if damage in LOG_DAMAGES:
        # The journal still holds what went before the batch; the batch's messages it can no
        # longer account for read as unknown: nobody gets a second copy.
        assert max(counts.values()) == 1
        assert unknown and set(counts) | unknown == everyone
    else:
        assert set(counts) == everyone  # those the journal lost were mailed again
    # Accepted once, the journal is whole again: the next run has nothing to send.
    again = batchmail("run", campaign)
    assert again.returncode in (0, 1) and "nothing to send" in again.stdout, again.stderr


def test_a_finished_journal_emptied_is_not_taken_for_a_new_campaign(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(5), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    journal_file(campaign).write_bytes(b"")

    result = batchmail("run", campaign)
    assert result.returncode == 3
    assert "is damaged: the file is empty" in result.stderr
    assert len(smtp_server.handler.messages) == 5
    assert batchmail("status", campaign).returncode == 3

    # Accepting the loss starts the campaign over: everyone is mailed again, as documented.
    result = batchmail("run", campaign, "--allow-damaged-journal")
    assert result.returncode == 0, result.stderr
    assert len(smtp_server.handler.messages) == 10
    assert batchmail("run", campaign).returncode == 0


def test_a_status_batchmail_does_not_know_is_refused_cleanly(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(5), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    connection = sqlite3.connect(journal_file(campaign))
    with connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE entries SET status = 'SENT' WHERE key = 'person3@example.org'")
    connection.close()

    for command in ("run", "status", "resend"):
        result = batchmail(command, campaign)
        assert result.returncode == 3, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert "'person3@example.org' has the status 'SENT'" in result.stderr, result.stderr
        assert "--allow-damaged-journal" in result.stderr
    assert len(smtp_server.handler.messages) == 5

    # Accepted, the entry reads as unknown: in doubt, so `run` does not send it again.
    result = batchmail("run", campaign, "--allow-damaged-journal")
    assert result.returncode == 1 and "nothing to send" in result.stdout, result.stderr
    status = batchmail("status", campaign, "--json", "--allow-damaged-journal")
    assert '"unknown": 1' in status.stdout
    assert len(smtp_server.handler.messages) == 5


KILLED_WHILE_CREATING = """
import os, signal, sqlite3, sys
# What a kill during the journal's switch to WAL mode leaves: pages of a first transaction in
# the file and a hot rollback journal beside it.
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size = 1")
connection.execute("BEGIN IMMEDIATE")
connection.execute("CREATE TABLE filler (x)")
connection.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 200)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_journal_killed_while_being_created_reads_as_blank(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(5), server=smtp_server)
    path = journal_file(campaign)
    path.parent.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", KILLED_WHILE_CREATING, str(path)], check=False)
    assert path.stat().st_size > 0 and path.with_name("journal.sqlite3-journal").exists()

    status = batchmail("status", campaign, "--json")
    assert status.returncode == 1, status.stderr
    assert '"pending": 5' in status.stdout
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    assert sorted(received(smtp_server).values()) == [1] * 5


def test_the_journal_files_are_private_under_umask_022(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    campaign, _ = killed_mid_batch(tmp_path, start_smtp_server, umask=0o022)
    state = state_dir(campaign)
    names = ["journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"]
    names += ["journal.sqlite3-log", "has-sent-mail"]
    modes = {name: oct((state / name).stat().st_mode & 0o777) for name in names}
    assert modes == {name: "0o600" for name in names}


def flip_a_third_in(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


OPERATIONS: dict[str, Callable[[Path], None]] = {
    "delete": Path.unlink,
    "empty": lambda path: path.write_bytes(b""),
    "cut": cut,
    "flip a byte": flip_a_third_in,
}
# The SQLite main file is left out of byte flips: its pages carry no checksum, so a changed
# byte inside a key is a different key, which no reader can tell from the real one.
FILES = ["journal.sqlite3-wal", "journal.sqlite3-shm", "journal.sqlite3-log", "has-sent-mail"]


def test_after_any_damage_batchmail_refuses_or_resends_nobody_recorded_sent(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    campaign, server = killed_mid_batch(tmp_path, start_smtp_server)
    state = state_dir(campaign)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(state, snapshot)
    sent = {key for key, status in statuses(journal_file(campaign)).items() if status == "sent"}
    trials = [(name, op) for name in FILES for op in OPERATIONS]
    trials += [("journal.sqlite3", op) for op in ("delete", "empty", "cut")]
    outcomes = collections.Counter()
    for name, operation in trials:
        shutil.rmtree(state)
        shutil.copytree(snapshot, state)
        OPERATIONS[operation](state / name)
        before = received(server)
        result = batchmail("run", campaign, "--quiet")
        assert "Traceback" not in result.stderr, (name, operation, result.stderr)
        again = received(server) - before
        if result.returncode == 3:
            assert not again, (name, operation)
            outcomes["refused"] += 1
        else:
            assert result.returncode in (0, 1), (name, operation, result.stderr)
            assert not (set(again) & sent), (name, operation, set(again) & sent)
            outcomes["went on"] += 1
    print(dict(outcomes))
    assert outcomes["refused"] >= len(FILES)  # not a test that passes by never damaging


def test_status_during_a_run_never_takes_the_run_for_damage(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    # The running writer commits and moves its side log on between a reader's look at the
    # journal and its look at the log: the reader must not call that damage.
    campaign = write_campaign(tmp_path, people(400), server=smtp_server, send={"window": 2})
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", "run", str(campaign), "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads = refusals = 0
    path = journal_file(campaign)
    while process.poll() is None:
        try:
            journal = Journal.open_readonly(path)
        except RunAborted as exc:
            refusals += 1
            print(exc)
            continue
        if journal is not None:
            journal.close()
            reads += 1
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert reads > 20 and refusals == 0, (reads, refusals)
