"""Killing a real `batchmail run` at any moment: a later run sends each remaining recipient
exactly once and never re-sends one recorded as sent."""

from __future__ import annotations

import asyncio
import collections
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from campaign_files import batchmail, people, status_json, write_campaign
from servers import RecordingHandler, StartServer

from batchmail.journal import Journal


class SlowHandler(RecordingHandler):
    """Takes ``delay`` seconds to answer the end of data, so a kill usually lands while a
    message is in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        await asyncio.sleep(self.delay)
        return None


def start_run(campaign: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchmail", "run", str(campaign), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
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


def test_ctrl_c_exits_130_with_a_consistent_journal(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(SlowHandler(delay=0.02))
    campaign = write_campaign(tmp_path, people(60), server=server)
    process = start_run(campaign)
    wait_for(lambda: len(server.messages) >= 10 or process.poll() is not None)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert batchmail("run", campaign, "--quiet").returncode in (0, 1)
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert max(received.values()) == 1
    counts = status_json(campaign)["counts"]
    assert counts["pending"] == 0 and counts["sent"] + counts["unknown"] == 60


def test_a_second_run_on_the_same_campaign_is_refused(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(SlowHandler(delay=0.05))
    # One message at a time: the first run must still be sending when the others start.
    campaign = write_campaign(tmp_path, people(100), server=server, send={"window": 1})
    first = start_run(campaign)
    try:
        wait_for(lambda: len(server.messages) >= 2)
        second = batchmail("run", campaign)
        assert second.returncode == 2
        assert "another batchmail run is sending this campaign" in second.stderr
        assert batchmail("resend", campaign).returncode == 2
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0
    received = collections.Counter(m.rcpt_tos[0] for m in server.messages)
    assert len(received) == 100 and max(received.values()) == 1
