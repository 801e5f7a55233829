"""End to end through `batchmail`: a row's status follows its own To addresses, a message
never attempted stays pending, and a run with nothing to send opens no connection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from campaign_files import batchmail, people, status_json, write_campaign
from faultserver import DyingHandler
from servers import Mode, RefusingHandler, SmtpTestServer, StartServer

from batchmail.journal import Journal
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, Status

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
    assert "batchmail resend" in again.stderr and "refused (" not in again.stderr


def test_connection_refused_fails_at_once(tmp_path: Path, closed_port: int) -> None:
    campaign = write_campaign(
        tmp_path,
        people(2),
        smtp={"host": "127.0.0.1", "port": closed_port, "security": "none", "timeout": 5},
        send={"retries": 5, "retry_delay": 30},  # a retry would take minutes
    )
    result = batchmail("run", campaign, timeout=20)
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
