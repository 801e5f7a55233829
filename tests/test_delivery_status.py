"""End to end through `batchmail`: a row's status follows its own To addresses, a message
never attempted stays pending, and a run with nothing to send opens no connection."""

from __future__ import annotations

from pathlib import Path

from campaign_files import batchmail, people, status_json, write_campaign
from servers import RefusingHandler, SmtpTestServer, StartServer

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
