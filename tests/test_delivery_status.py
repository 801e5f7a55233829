"""End to end through `batchmail`: a row's status follows its own To addresses, a message
never attempted stays pending, and a run with nothing to send opens no connection."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from campaign_files import batchmail, people, status_json, write_campaign
from faultserver import DyingHandler
from servers import MODES, GreylistingHandler, Mode, RefusingHandler, SmtpTestServer, StartServer

from batchmail.journal import Journal
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, RecipientRefusal, Status
from batchmail.row_outcome import for_row, still_to_reach

# --- nothing to send, no connection ----------------------------------------------------------


def test_finished_campaign_with_the_server_stopped_says_nothing_to_send(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(3), server=smtp_server, send={"retries": 3})
    assert batchmail("run", campaign).returncode == 0
    smtp_server.stop()  # its port is closed now: a connection attempt would be refused

    again = batchmail("run", campaign)
    assert again.returncode == 0, again.stderr
    assert "nothing to send: 3 sent" in again.stdout
    assert "refused" not in again.stderr and "trying again" not in again.stderr

    resent = batchmail("resend", campaign)
    assert resent.returncode == 0, resent.stderr
    assert "nothing to send: 3 sent" in resent.stdout and resent.stderr == ""


def test_nothing_to_send_exits_as_the_statuses_say(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    smtp_server = start_smtp_server(RefusingHandler())
    rows = people(2)
    rows[1]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server)
    assert batchmail("run", campaign).returncode == 1
    smtp_server.stop()

    again = batchmail("run", campaign)
    assert again.returncode == 1
    assert "nothing to send: 1 sent, 1 failed" in again.stdout
    assert "--export-failed FILE" in again.stderr and "refused (" not in again.stderr


def test_connection_refused_fails_at_once(tmp_path: Path, closed_port: int) -> None:
    campaign = write_campaign(
        tmp_path,
        people(2),
        smtp={"host": "127.0.0.1", "port": closed_port, "security": "none", "timeout": 5},
        send={"retries": 5, "retry_delay": 30},  # a retry would take minutes
    )
    # A retry would print "trying again" and take 30 s, then 60 s more: the bound only
    # stops a run that hangs, on however busy a machine.
    result = batchmail("run", campaign, timeout=120)
    assert result.returncode == 3
    assert f"127.0.0.1:{closed_port}: connection refused" in result.stderr
    assert "smtp.host and smtp.port" in result.stderr
    assert "trying again" not in result.stderr
    assert status_json(campaign)["counts"]["pending"] == 2


# --- never attempted is not deferred --------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "pipelining"])
def test_rows_never_attempted_when_the_server_died_stay_pending(
    tmp_path: Path, start_smtp_server: StartServer, mode: Mode
) -> None:
    handler = DyingHandler(die_at=4)
    server = start_smtp_server(handler, mode=mode)
    handler.stop_listening = server.stop_listening
    campaign = write_campaign(tmp_path, people(10), server=server, send={"retries": 2})

    first = batchmail("run", campaign)
    assert first.returncode == 3, first.stdout + first.stderr
    assert handler.died.is_set() and "connection refused" in first.stderr
    status = status_json(campaign)
    assert status["counts"] == {
        "sent": 3,
        "failed": 0,
        "deferred": 1,
        "unknown": 0,
        "pending": 6,
    }, status
    by_key = {r["key"]: r for r in status["recipients"]}
    assert by_key["person4@example.org"]["status"] == "deferred"  # its MAIL FROM went out
    assert by_key["person4@example.org"]["attempts"] == 1
    pending = [r for r in status["recipients"] if r["status"] == "pending"]
    assert [r["attempts"] for r in pending] == [0] * 6

    server.stop()
    server.start()  # back, on the same port
    again = batchmail("run", campaign)
    assert again.returncode == 1, again.stdout + again.stderr  # person4 is still deferred
    assert "6 sent" in again.stdout
    resent = batchmail("resend", campaign)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    received = Counter(m.rcpt_tos for m in server.messages)
    assert received == Counter((f"person{i}@example.org",) for i in range(1, 11))


def test_a_mark_taken_back_leaves_the_row_as_it_was(tmp_path: Path) -> None:
    """A BDAT group is marked in flight at once; those of it that never went out (the
    connection went first) are taken back: never attempted, or deferred as before."""
    fresh, again = _message("fresh@example.org", 1), _message("again@example.org", 2)
    with Journal.open(tmp_path / "journal.sqlite3") as journal:
        journal.record(again, Outcome(Status.DEFERRED, 451, "try later", transient=True))
        journal.reserve([fresh, again])
        journal.mark_in_flight_many([fresh, again])
        journal.unmark([fresh, again])
    with Journal.open(tmp_path / "journal.sqlite3") as journal:
        assert journal.get("fresh@example.org") is None
        entry = journal.get("again@example.org")
        assert entry is not None and (entry.status, entry.attempts) == ("deferred", 1)


def _message(address: str, row: int) -> ComposedMessage:
    envelope = Envelope("sender@example.com", (address,))
    return ComposedMessage(row, address, envelope, f"<{row}@example.com>", (b"x\r\n",))


# --- a row's status is about its own To addresses --------------------------------------------

ARCHIVE = "archive@example.com"


@pytest.mark.parametrize("mode", MODES)
def test_to_refused_with_an_archive_bcc_accepted_is_not_sent(
    tmp_path: Path, start_smtp_server: StartServer, mode: Mode
) -> None:
    handler = GreylistingHandler()
    handler.defer_times = 2  # the first try and the retry in the run; the resend goes
    server = start_smtp_server(handler, mode=mode)
    rows = [{**row, "cc": ""} for row in people(4)]
    rows[1]["email"] = "defer-me@example.org"
    rows[2]["email"] = "refuse-me@example.org"
    rows[3]["cc"] = "refuse-cc@example.org"
    campaign = write_campaign(
        tmp_path,
        rows,
        server=server,
        message={"cc": "{{ cc }}", "bcc": ARCHIVE},
        send={"retries": 1, "retry_delay": 0.01},
    )

    first = batchmail("run", campaign)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 sent, 1 failed, 1 deferred" in first.stdout
    status = status_json(campaign)
    assert status["counts"]["sent"] == 2
    by_key = {r["key"]: r for r in status["recipients"]}
    assert set(by_key) == {"defer-me@example.org", "refuse-me@example.org", "person4@example.org"}
    deferred, failed, cc_refused = (
        by_key["defer-me@example.org"],
        by_key["refuse-me@example.org"],
        by_key["person4@example.org"],
    )
    assert (deferred["status"], deferred["code"], deferred["attempts"]) == ("deferred", 451, 2)
    assert [(r["address"], r["code"]) for r in deferred["refused"]] == [
        ("defer-me@example.org", 451)
    ]
    assert (failed["status"], failed["code"]) == ("failed", 550)
    assert [(r["address"], r["code"]) for r in failed["refused"]] == [
        ("refuse-me@example.org", 550)
    ]
    assert cc_refused["status"] == "sent"
    assert [(r["address"], r["code"]) for r in cc_refused["refused"]] == [
        ("refuse-cc@example.org", 550)
    ]
    human = batchmail("status", campaign)
    assert "refuse-cc@example.org: 550" in human.stdout and "defer-me@example.org" in human.stdout

    resent = batchmail("resend", campaign)
    assert resent.returncode == 1, resent.stdout + resent.stderr  # refuse-me still refused
    assert "1 sent, 1 failed" in resent.stdout
    after = status_json(campaign)
    assert (after["counts"]["sent"], after["counts"]["failed"]) == (3, 1)

    # Everyone who accepted got the row's message exactly once: the archive was never sent
    # a row's message again, nor was anyone else who had it.
    copies = Counter(
        (message.message_id, address) for message in server.messages for address in message.rcpt_tos
    )
    assert set(copies.values()) == {1}, copies
    per_address = Counter(address for _, address in copies)
    assert per_address[ARCHIVE] == 4
    assert per_address["defer-me@example.org"] == 1
    assert per_address["refuse-me@example.org"] == 0
    assert per_address["person4@example.org"] == 1


def test_who_has_the_message_is_kept_through_a_mark_and_a_kill(tmp_path: Path) -> None:
    """Killed between a resend's reply and its record: the entry reads unknown, and still
    knows the archive has the message (a resend --include-unknown leaves it out)."""
    path = tmp_path / "journal.sqlite3"
    person = "defer-me@example.org"
    envelope = Envelope("sender@example.com", (person, ARCHIVE), (person,))
    message = ComposedMessage(1, person, envelope, "<1@example.com>", (b"x\r\n",))
    refusal = RecipientRefusal(person, 451, "try later")
    outcome = Outcome(Status.SENT, 250, "ok", (refusal,))
    row = for_row(outcome, envelope)
    assert (row.status, row.code, row.accepted) == (Status.DEFERRED, 451, (ARCHIVE,))
    with Journal.open(path) as journal:
        journal.record(message, row)
    retry = still_to_reach(message, row.accepted)
    assert retry is not None and retry.envelope.rcpt_tos == (person,)
    writer = Journal.open(path)
    try:
        writer.reserve([retry])
        writer.mark_in_flight_many([retry])  # a side-log line: the process dies after it
        reader = Journal.open_readonly(path)
        assert reader is not None
        with reader:
            entry = reader.get(person)
        assert entry is not None and entry.effective_status == "unknown"
        assert (entry.accepted, entry.rcpt_tos, entry.attempts) == ((ARCHIVE,), (person,), 2)
    finally:
        writer.close()
    with Journal.open(path) as journal:
        journal.record(retry, Outcome(Status.SENT, 250, "ok"))
        entry = journal.get(person)
    assert entry is not None and entry.status == "sent"


def test_an_unknown_host_fails_at_once(tmp_path: Path) -> None:
    campaign = write_campaign(
        tmp_path,
        people(1),
        smtp={"host": "no-such-host.invalid", "port": 25, "security": "none", "timeout": 5},
        send={"retries": 5, "retry_delay": 30},
    )
    result = batchmail("run", campaign, timeout=60)
    assert result.returncode == 3
    assert "no-such-host.invalid:25: cannot resolve the host name" in result.stderr
    assert "trying again" not in result.stderr


class _HoldingGreylist(GreylistingHandler):
    """A greylisting server that, once ``hold`` is set, takes the next message and never
    answers it (``holding`` is set then): the client is killed while the message is out."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.holding = threading.Event()

    async def on_data(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str | None:
        if self.hold:
            with self._lock:
                self._messages.append(self.received(server, envelope))
            self.holding.set()
            await asyncio.get_running_loop().create_future()  # no reply, ever
        return None


def test_killed_during_a_resend_the_archive_is_still_not_mailed_again(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    """The first try went to the archive and was deferred for the To; the resend is killed
    with its message out (unknown). `resend --include-unknown` then goes to the To alone:
    the journal knew, through the in-flight mark, that the archive has it."""
    handler = _HoldingGreylist()
    handler.defer_times = 1
    server = start_smtp_server(handler, mode="pipelining")
    rows = people(2)
    rows[1]["email"] = "defer-me@example.org"
    campaign = write_campaign(
        tmp_path, rows, server=server, message={"bcc": ARCHIVE}, send={"retries": 0}
    )
    assert batchmail("run", campaign).returncode == 1

    handler.hold = True
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", "resend", str(campaign)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert handler.holding.wait(60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    handler.hold = False
    (row,) = status_json(campaign)["recipients"]
    assert (row["key"], row["status"]) == ("defer-me@example.org", "unknown")

    again = batchmail("resend", campaign, "--include-unknown")
    assert again.returncode == 0, again.stdout + again.stderr
    to_archive = Counter(m.message_id for m in server.messages if ARCHIVE in m.rcpt_tos)
    assert len(to_archive) == 2 and set(to_archive.values()) == {1}, to_archive
    assert [m.rcpt_tos for m in server.messages[-2:]] == [("defer-me@example.org",)] * 2
