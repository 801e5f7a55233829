"""Killing a real `batchmail run` at any moment: a later run sends each remaining recipient
exactly once and never re-sends one recorded as sent."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from campaign_files import batchmail, people, status_json, write_campaign
from servers import Mode, RecordingHandler, SmtpTestServer, StartServer

from batchmail.journal import Journal
from batchmail.stop import GRACE_VARIABLE


class SlowHandler(RecordingHandler):
    """Takes ``delay`` seconds to answer the end of data, so a kill usually lands while a
    message is in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        await asyncio.sleep(self.delay)
        return None


def start_run(campaign: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchmail", "run", str(campaign), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def journal_statuses(campaign: Path) -> dict[str, str]:
    journal = Journal.open_readonly(campaign.parent / ".batchmail/test-campaign/journal.sqlite3")
    assert journal is not None
    with journal:
        return {entry.key: entry.status for entry in journal.entries()}


@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
def test_sigkill_mid_batch_then_rerun_sends_each_remaining_recipient_once(
    tmp_path: Path, start_smtp_server: StartServer, mode: str
) -> None:
    handler = SlowHandler(delay=0.02)
    server = start_smtp_server(handler, mode=mode)
    recipients = people(80)
    campaign = write_campaign(tmp_path, recipients, server=server)
    in_flight_at_kills: set[str] = set()

    # The pauses after the trigger vary where in the send loop the kill lands: right after a
    # reply, and well inside the 20 ms a message spends in flight.
    for kill_at, pause in ((10, 0.0), (30, 0.012), (55, 0.008)):
        process = start_run(campaign)
        wait_for(lambda at=kill_at, p=process: len(server.messages) >= at or p.poll() is not None)
        time.sleep(pause)
        process.send_signal(signal.SIGKILL)
        process.wait()
        statuses = journal_statuses(campaign)
        in_flight = {key for key, status in statuses.items() if status == "in_flight"}
        if mode == "pipelining":
            # DATA goes one message at a time: the batch's other reserved messages, whose
            # data never went out, must not read as in flight.
            assert len(in_flight - in_flight_at_kills) <= 1, in_flight
        in_flight_at_kills |= in_flight
        # A recipient the journal calls sent was received; none was received twice.
        received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
        assert all(received[key] == 1 for key, s in statuses.items() if s == "sent")

    final = batchmail("run", campaign, "--quiet")
    assert final.returncode in (0, 1), final.stderr

    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    status = status_json(campaign)
    unknown = {r["key"] for r in status["recipients"] if r["status"] == "unknown"}
    assert status["counts"]["pending"] == 0
    assert status["counts"]["sent"] + len(unknown) == len(recipients)
    assert unknown <= in_flight_at_kills  # only a message in flight at a kill is in doubt
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates == 0  # nobody got it twice
    for row in recipients:
        if row["email"] not in unknown:
            assert received[row["email"]] == 1, row["email"]
    print(
        f"recipients {len(recipients)}, kills 3, in flight at a kill {len(in_flight_at_kills)}, "
        f"unknown {len(unknown)}, duplicates 0"
    )
    connection = sqlite3.connect(campaign.parent / ".batchmail/test-campaign/journal.sqlite3")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


class HoldingHandler(RecordingHandler):
    """Answers the first ``hold_at - 1`` messages at once; from then on, while ``holding``,
    the reply to each message waits until the test sets ``release``. ``held`` is set when
    the first reply is held: the client has that message (at least) on the wire."""

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.holding = True
        self.held = threading.Event()
        self.release = threading.Event()
        self._arrivals = itertools.count(1)

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        if self.holding and next(self._arrivals) >= self.hold_at:
            self.held.set()
            while not self.release.is_set():  # the server's loop polls; the test waits on events
                await asyncio.sleep(0.005)
        return None


STOP_NOTICE = "sending no more"


def patient(server: SmtpTestServer) -> dict[str, object]:
    """Settings for ``server`` that wait for a held reply as long as a test may take."""
    return {"host": server.host, "port": server.port, "security": "none", "data_timeout": 600}


def read_until(stream: IO[str] | None, text: str) -> bool:
    """Read lines until one contains ``text`` (True) or the stream ends (False)."""
    assert stream is not None
    return any(text in line for line in stream)


def stop_while_held(process: subprocess.Popen[str], handler: HoldingHandler, signum: int) -> None:
    """Once the server holds a reply, signal the run and wait until it says it is stopping."""
    wait_for(lambda: handler.held.is_set() or process.poll() is not None)
    process.send_signal(signum)
    assert read_until(process.stderr, STOP_NOTICE), "the run did not say it was stopping"


@pytest.mark.parametrize(
    ("mode", "signum", "sessions"),
    [
        pytest.param("chunking", signal.SIGINT, 1, id="chunking-SIGINT"),
        pytest.param("pipelining", signal.SIGINT, 1, id="pipelining-SIGINT"),
        pytest.param("plain", signal.SIGINT, 1, id="plain-SIGINT"),
        pytest.param("chunking", signal.SIGTERM, 1, id="chunking-SIGTERM"),
        pytest.param("chunking", signal.SIGINT, 3, id="chunking-SIGINT-3-sessions"),
        pytest.param("pipelining", signal.SIGTERM, 3, id="pipelining-SIGTERM-3-sessions"),
    ],
)
def test_ctrl_c_exits_130_with_a_consistent_journal(
    tmp_path: Path, start_smtp_server: StartServer, mode: Mode, signum: int, sessions: int
) -> None:
    """The first Ctrl-C (or SIGTERM) lets what is on the wire finish: every message the
    server accepted is recorded sent, none is unknown, the rest are pending."""
    handler = HoldingHandler(hold_at=11)
    server = start_smtp_server(handler, mode=mode)
    send = {"window": 8, "sessions": sessions}
    campaign = write_campaign(tmp_path, people(60), smtp=patient(server), send=send)
    process = start_run(campaign)
    try:
        stop_while_held(process, handler, signum)
    finally:
        handler.release.set()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signum, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    accepted = {message.rcpt_tos[0] for message in server.messages}
    statuses = journal_statuses(campaign)
    assert statuses == dict.fromkeys(accepted, "sent")  # no unknown, no deferred
    counts = status_json(campaign)["counts"]
    assert counts["pending"] == 60 - len(accepted) > 0
    assert counts["sent"] == len(accepted) >= 11  # the held one's reply was waited for

    assert batchmail("run", campaign, "--quiet").returncode == 0
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert len(received) == 60 and max(received.values()) == 1


@pytest.mark.parametrize("sessions", [1, 3])
def test_a_second_ctrl_c_stops_at_once(
    tmp_path: Path, start_smtp_server: StartServer, sessions: int
) -> None:
    """With a grace no test would wait out, only the second Ctrl-C can end the run: what
    was on the wire is unknown, nothing else is."""
    handler = HoldingHandler(hold_at=11)
    server = start_smtp_server(handler)
    send = {"window": 8, "sessions": sessions}
    campaign = write_campaign(tmp_path, people(60), smtp=patient(server), send=send)
    process = start_run(campaign, env={GRACE_VARIABLE: "86400"})
    try:
        stop_while_held(process, handler, signal.SIGINT)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        accepted = {message.rcpt_tos[0] for message in server.messages}
    finally:
        handler.release.set()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    statuses = journal_statuses(campaign)
    unknown = {key for key, status in statuses.items() if status != "sent"}
    assert set(statuses.values()) <= {"sent", "in_flight"}
    assert {key for key, status in statuses.items() if status == "sent"} <= accepted
    # Each session: at most a window unanswered (8), and a group marked (2); one at least
    # was on the wire, its reply held.
    assert 1 <= len(unknown) <= sessions * (8 + 2)

    assert batchmail("run", campaign, "--quiet").returncode == 1  # the unknown ones remain
    counts = status_json(campaign)["counts"]
    assert counts["pending"] == 0 and counts["unknown"] == len(unknown)
    assert counts["sent"] + counts["unknown"] == 60
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert max(received.values()) == 1


def test_the_grace_ends_a_stop_that_gets_no_reply(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    """A server that never answers cannot hold a stopped run: after the grace it stops as
    at a second Ctrl-C, the message on the wire unknown."""
    handler = HoldingHandler(hold_at=4)
    server = start_smtp_server(handler, mode="plain")
    campaign = write_campaign(tmp_path, people(10), smtp=patient(server))
    process = start_run(campaign, env={GRACE_VARIABLE: "0.5"})
    try:
        stop_while_held(process, handler, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)  # the server answers nothing meanwhile
    finally:
        handler.release.set()

    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    statuses = journal_statuses(campaign)
    assert statuses == {
        **{f"person{i}@example.org": "sent" for i in (1, 2, 3)},
        "person4@example.org": "in_flight",
    }


def test_a_second_run_on_the_same_campaign_is_refused(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    # The server holds the second reply until the others have been turned away: the first
    # run is still sending, however slowly they start.
    handler = HoldingHandler(hold_at=2)
    server = start_smtp_server(handler)
    campaign = write_campaign(tmp_path, people(100), smtp=patient(server))
    first = start_run(campaign)
    try:
        wait_for(lambda: handler.held.is_set() or first.poll() is not None)
        second = batchmail("run", campaign)
        assert second.returncode == 2
        assert "another batchmail run is sending this campaign" in second.stderr
        assert batchmail("resend", campaign).returncode == 2
    finally:
        handler.release.set()
        first.wait(timeout=120)
    assert first.returncode == 0
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert len(received) == 100 and max(received.values()) == 1
