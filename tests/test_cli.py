"""The commands end to end: the real ``batchmail`` process against real SMTP servers."""

from __future__ import annotations

import asyncio
import collections
import csv
import mailbox
import shutil
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from campaign_files import batchmail, parse, people, status_json, write_campaign
from servers import PASSWORD, USERNAME, RecordingHandler, SmtpTestServer, StartServer

REPO = Path(__file__).resolve().parent.parent


def test_example_campaign_sends_to_the_embedded_server(tmp_path: Path) -> None:
    # The example as committed: not the state a user's own run of it left in the tree.
    mine = shutil.ignore_patterns(".batchmail", "__pycache__")
    shutil.copytree(REPO / "campaigns", tmp_path / "campaigns", ignore=mine)
    shutil.copytree(REPO / "templates", tmp_path / "templates", ignore=mine)
    campaign = tmp_path / "campaigns" / "welcome.yaml"

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert "5 sent, 0 failed, 0 deferred, 0 unknown" in result.stdout
    maildir = tmp_path / "campaigns" / ".batchmail" / "welcome-2026" / "sink"
    assert str(maildir) in result.stdout
    received = {
        parse(m.as_bytes())["To"].addresses[0].addr_spec: parse(m.as_bytes())
        for m in mailbox.Maildir(maildir, create=False)
    }
    assert sorted(received) == sorted(
        row["email"] for row in csv.DictReader((tmp_path / "campaigns/welcome.csv").open())
    )
    wei = received["wei@example.org"]
    assert str(wei["Subject"]) == "Welcome, 王伟!"
    assert wei["To"].addresses[0].display_name == "王伟"
    assert "Dear 王伟," in wei.get_body(("plain",)).get_content()
    assert "<strong>Research</strong>" in wei.get_body(("html",)).get_content()
    (guide,) = list(wei.iter_attachments())
    assert guide.get_filename() == "guide.pdf" and guide.get_content_type() == "application/pdf"
    assert guide.get_content() == (tmp_path / "templates/files/guide.pdf").read_bytes()
    assert wei["X-Campaign"] == "welcome-2026"

    again = batchmail("run", campaign)
    assert again.returncode == 0 and "nothing to send" in again.stdout
    assert len(list(mailbox.Maildir(maildir, create=False))) == 5


def test_run_sends_each_row_once_with_cc_and_hidden_bcc(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = [{**row, "boss": f"boss{i}@example.net"} for i, row in enumerate(people(3), 1)]
    campaign = write_campaign(
        tmp_path,
        rows,
        server=smtp_server,
        message={"cc": "{{ boss }}", "bcc": "archive@example.com", "reply_to": "help@example.com"},
    )
    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert "3 sent, 0 failed, 0 deferred, 0 unknown" in result.stdout
    messages = smtp_server.messages
    assert len(messages) == 3
    for index, received in enumerate(messages, 1):
        assert received.mail_from == "sender@example.com"
        assert received.rcpt_tos == (
            f"person{index}@example.org",
            f"boss{index}@example.net",
            "archive@example.com",
        )
        message = parse(received.data)
        assert b"Bcc" not in received.data and b"archive@" not in received.data
        assert message["Cc"] == f"boss{index}@example.net"
        assert message["Reply-To"] == "help@example.com"
        assert message["MIME-Version"] == "1.0" and message["Date"]
        assert f"your code is C{index:05d}." in message.get_body(("plain",)).get_content()
    assert len(set(smtp_server.message_ids())) == 3
    assert smtp_server.commands.count("RSET") >= 2  # RSET between messages on one session
    assert smtp_server.commands.count("EHLO") == 1
    assert status_json(campaign)["counts"] == {
        "sent": 3,
        "failed": 0,
        "deferred": 0,
        "unknown": 0,
        "pending": 0,
    }


def test_dry_run_writes_exactly_what_would_be_sent(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = people(3) + [{"email": "odd/name@example.org", "name": "Odd", "code": "X"}]
    campaign = write_campaign(tmp_path, rows, server=smtp_server)
    out = tmp_path / "out"

    result = batchmail("run", campaign, "--dry-run", "--out", out)

    assert result.returncode == 0, result.stderr
    assert smtp_server.messages == [] and smtp_server.commands == []
    assert not (tmp_path / ".batchmail" / "test-campaign" / "journal.sqlite3").exists()
    with (out / "manifest.csv").open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert [m["key"] for m in manifest] == [r["email"] for r in rows]
    assert manifest[3]["file"] == "000004-odd_name@example.org.eml"
    assert set(manifest[0]) == {
        "row",
        "key",
        "file",
        "envelope_sender",
        "envelope_recipients",
        "message_id",
    }

    assert batchmail("run", campaign).returncode == 0
    for entry, received in zip(manifest, smtp_server.messages, strict=True):
        written = (out / entry["file"]).read_bytes()
        assert entry["message_id"] == received.message_id
        assert entry["envelope_recipients"] == " ".join(received.rcpt_tos)
        # Identical but for the Date header, which is the moment of sending.
        assert _without_date(written) == _without_date(received.data)


def _without_date(data: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Date: "))


def test_preview_prints_the_message_for_a_row(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path, people(3), server=smtp_server)
    result = batchmail("preview", campaign, "--row", "2")
    assert result.returncode == 0, result.stderr
    assert "RCPT TO: person2@example.org" in result.stderr
    message = parse(result.stdout.encode())
    assert message["Subject"] == "Hello Person 2"
    assert batchmail("preview", campaign, "--row", "9").returncode == 2
    assert smtp_server.commands == []


def test_refused_recipients_fail_and_the_rest_are_sent(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(4)
    rows[1]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server_refusing)

    result = batchmail("run", campaign)

    assert result.returncode == 1
    assert "this run: 3 sent, 1 failed, 0 deferred, 0 unknown" in result.stdout
    # Refused for good (550): a resend would get the same answer; the export is the next step.
    assert f"batchmail status {campaign} --export-failed FILE" in result.stderr
    assert "batchmail resend" not in result.stderr
    status = status_json(campaign)
    assert status["counts"]["failed"] == 1
    (failed,) = status["recipients"]
    assert failed["key"] == "refuse-me@example.org" and failed["code"] == 550
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["message_id"]
    human = batchmail("status", campaign)
    assert "refuse-me@example.org  failed: 550" in human.stdout and human.returncode == 1


def test_partly_refused_envelope_is_sent_to_the_accepted_and_refusal_recorded(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path, people(1), server=smtp_server_refusing, message={"cc": "refuse-cc@example.org"}
    )
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    assert smtp_server_refusing.messages[0].rcpt_tos == ("person1@example.org",)
    assert status_json(campaign)["counts"]["sent"] == 1
    human = batchmail("status", campaign)
    assert "person1@example.org  sent: 250" in human.stdout
    assert "refused: refuse-cc@example.org: 550" in human.stdout


def test_deferred_then_resend_delivers(
    tmp_path: Path, smtp_server_deferring: SmtpTestServer
) -> None:
    rows = people(3)
    rows[2]["email"] = "defer-me@example.org"
    smtp_server_deferring.handler.defer_times = 3  # type: ignore[attr-defined]
    campaign = write_campaign(
        tmp_path, rows, server=smtp_server_deferring, send={"retries": 1, "retry_delay": 0.01}
    )

    first = batchmail("run", campaign)
    assert first.returncode == 1
    assert "2 sent, 0 failed, 1 deferred" in first.stdout
    (deferred,) = status_json(campaign)["recipients"]
    assert deferred["status"] == "deferred" and deferred["code"] == 451
    assert deferred["attempts"] == 2  # the first try and one retry

    second = batchmail("resend", campaign)
    assert second.returncode == 0, second.stdout + second.stderr
    assert status_json(campaign)["counts"]["sent"] == 3
    delivered = [m.rcpt_tos for m in smtp_server_deferring.messages]
    assert delivered.count(("defer-me@example.org",)) == 1
    assert len(delivered) == 3


def test_connection_lost_after_data_is_unknown_and_only_resent_on_request(
    tmp_path: Path, smtp_server_dropping: SmtpTestServer
) -> None:
    handler = smtp_server_dropping.handler
    handler.drop_at = "end_of_data"  # type: ignore[attr-defined]
    handler.drop_after = 1  # type: ignore[attr-defined]
    handler.drop_times = 1  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(3), server=smtp_server_dropping)

    first = batchmail("run", campaign)

    assert first.returncode == 1
    assert "2 sent, 0 failed, 0 deferred, 1 unknown" in first.stdout
    assert "--include-unknown" in first.stderr
    (unknown,) = status_json(campaign)["recipients"]
    assert unknown["key"] == "person2@example.org" and unknown["status"] == "unknown"

    assert batchmail("resend", campaign).returncode == 1  # unknown is not resent by default
    assert len(smtp_server_dropping.messages) == 2
    assert batchmail("resend", campaign, "--include-unknown").returncode == 0
    assert [m.rcpt_tos[0] for m in smtp_server_dropping.messages] == [
        "person1@example.org",
        "person3@example.org",
        "person2@example.org",
    ]


def test_dropped_connection_before_data_reconnects_and_carries_on(
    tmp_path: Path, smtp_server_dropping: SmtpTestServer
) -> None:
    handler = smtp_server_dropping.handler
    handler.drop_at = "mail"  # type: ignore[attr-defined]
    handler.drop_after = 2  # type: ignore[attr-defined]
    handler.drop_times = 1  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(5), server=smtp_server_dropping)
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = smtp_server_dropping.message_ids()
    assert len(ids) == 5 and len(set(ids)) == 5


def test_421_reconnects_and_every_message_arrives_once(
    tmp_path: Path, smtp_server_421: SmtpTestServer
) -> None:
    smtp_server_421.handler.close_after = 2  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(7), server=smtp_server_421)
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = smtp_server_421.message_ids()
    assert len(ids) == 7 and len(set(ids)) == 7
    # Two messages a session, the third 421'd at MAIL goes first on the next: 2+2+2+1.
    assert smtp_server_421.commands.count("EHLO") == 4
    assert "retry" not in result.stderr  # no message used up an attempt of its own


def test_421_at_mail_after_a_message_uses_up_no_retry(
    tmp_path: Path, smtp_server_421: SmtpTestServer
) -> None:
    # One message a session, and no retries: each 421 at MAIL is the session's doing, so
    # every message still goes, each first on a session of its own.
    smtp_server_421.handler.close_after = 1  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(4), server=smtp_server_421, send={"retries": 0})
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = smtp_server_421.message_ids()
    assert len(ids) == 4 and len(set(ids)) == 4
    assert smtp_server_421.commands.count("EHLO") == 4
    assert status_json(campaign)["counts"]["sent"] == 4


def test_a_server_that_421s_every_first_mail_still_ends_the_run(
    tmp_path: Path, smtp_server_421: SmtpTestServer
) -> None:
    # No session takes a message: each costs one attempt, so the run ends after
    # send.retries + 1 sessions a message, everything deferred.
    smtp_server_421.handler.close_after = 0  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(3), server=smtp_server_421)  # retries: 2
    result = batchmail("run", campaign)
    assert result.returncode != 0 and "3 deferred" in result.stdout, result.stdout
    assert smtp_server_421.messages == []
    assert smtp_server_421.commands.count("MAIL") == 3 * 3  # a session each


def test_max_per_session_opens_fresh_sessions(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path, people(5), server=smtp_server, send={"max_per_session": 2})
    assert batchmail("run", campaign).returncode == 0
    assert smtp_server.commands.count("EHLO") == 3
    assert len(smtp_server.messages) == 5


def test_starttls_and_auth_with_password_from_environment(
    tmp_path: Path, smtp_server_starttls_requiring_auth: SmtpTestServer
) -> None:
    server = smtp_server_starttls_requiring_auth
    campaign = write_campaign(
        tmp_path,
        people(2),
        server=server,
        smtp={
            "host": server.host,
            "port": server.port,
            "security": "starttls",
            "username": USERNAME,
            "password_env": "TEST_SMTP_PW",
            "ca_file": str(server.ca_file),
            "timeout": 5,
        },
    )
    result = batchmail("run", campaign, env={"TEST_SMTP_PW": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert all(m.tls for m in server.messages) and len(server.messages) == 2


def test_wrong_password_aborts_with_exit_3_and_never_prints_it(
    tmp_path: Path, smtp_server_starttls_requiring_auth: SmtpTestServer
) -> None:
    server = smtp_server_starttls_requiring_auth
    campaign = write_campaign(
        tmp_path,
        people(2),
        server=server,
        smtp={
            "host": server.host,
            "port": server.port,
            "security": "starttls",
            "username": USERNAME,
            "password_env": "TEST_SMTP_PW",
            "ca_file": str(server.ca_file),
        },
    )
    result = batchmail("run", campaign, env={"TEST_SMTP_PW": "wrong-Secret-123"})
    assert result.returncode == 3
    assert "535" in result.stderr and "authentication" in result.stderr.lower()
    assert "wrong-Secret-123" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert server.messages == []


def test_untrusted_certificate_aborts(tmp_path: Path, smtp_server_starttls: SmtpTestServer) -> None:
    server = smtp_server_starttls
    campaign = write_campaign(
        tmp_path,
        people(1),
        server=server,
        smtp={"host": server.host, "port": server.port, "security": "starttls"},
    )
    result = batchmail("run", campaign)
    assert result.returncode == 3
    assert "certificate" in result.stderr.lower() and server.messages == []


def test_starttls_not_offered_aborts(
    tmp_path: Path, smtp_server_without_starttls: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(1), server=smtp_server_without_starttls)
    result = batchmail("run", campaign)
    assert result.returncode == 3 and "STARTTLS" in result.stderr
    assert smtp_server_without_starttls.messages == []


def test_unreachable_server_names_host_and_port(tmp_path: Path, closed_port: int) -> None:
    campaign = write_campaign(
        tmp_path,
        people(1),
        smtp={"host": "127.0.0.1", "port": closed_port, "security": "none", "timeout": 2},
        send={"retries": 1, "retry_delay": 0.01},
    )
    result = batchmail("run", campaign)
    assert result.returncode == 3
    assert f"127.0.0.1:{closed_port}" in result.stderr and "refused" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert status_json(campaign)["counts"]["pending"] == 1


def test_init_writes_a_campaign_that_checks_and_runs(tmp_path: Path) -> None:
    result = batchmail("init", tmp_path / "new")
    assert result.returncode == 0, result.stderr
    campaign = tmp_path / "new" / "campaign.yaml"
    assert batchmail("check", campaign).returncode == 0
    assert batchmail("run", campaign).returncode == 0
    assert batchmail("init", tmp_path / "new").returncode == 2  # never overwrites


def test_help_lists_every_command() -> None:
    result = batchmail("--help")
    for command in ("check", "preview", "run", "resend", "status", "sink", "init"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_rows_are_all_reported_and_nothing_is_sent(
    tmp_path: Path, smtp_server: SmtpTestServer, command: str
) -> None:
    rows = people(8)
    rows[1]["email"] = "a@b.com>, evil@x.com"
    rows[2]["email"] = '"x"@'
    rows[3]["name"] = "Mallory\r\nBcc: victim@example.com"
    rows[4]["email"] = rows[0]["email"]
    rows[5]["code"] = ""
    campaign = write_campaign(
        tmp_path, rows, server=smtp_server, message={"attachments": ["files/{{ code }}.pdf"]}
    )
    (tmp_path / "files").mkdir()
    for row in rows:
        if row["code"]:
            (tmp_path / "files" / f"{row['code']}.pdf").write_bytes(b"%PDF-1.4 test")
    (tmp_path / "files" / "C00007.pdf").unlink()

    result = batchmail(command, campaign)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    text = result.stderr
    assert ("nothing was sent" in text) == (command == "run")  # check could send nothing
    assert 'people.csv, row 2, message.to: "a@b.com>, evil@x.com" is not one email address' in text
    assert "people.csv, row 3" in text
    assert "people.csv, row 4" in text
    assert "people.csv, row 5 (line 7), column email: duplicate key" in text
    assert "people.csv, row 6" in text
    assert "people.csv, row 7" in text and "C00007.pdf" in text
    assert "row 1 " not in text and "row 8" not in text
    assert smtp_server.commands == []


def test_undefined_variable_names_template_line_and_row(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path, people(2), server=smtp_server, text="Hello {{ name }},\n\n{{ nmae }}\n"
    )
    result = batchmail("check", campaign)
    assert result.returncode == 2
    assert "body.txt.j2, line 3" in result.stderr and "'nmae' is undefined" in result.stderr
    assert "people.csv, rows 1-2 (2 rows): template body.txt.j2" in result.stderr


def test_templated_attachment_leaving_the_directory_is_refused(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = people(1)
    rows[0]["code"] = "../../../../etc/passwd"
    campaign = write_campaign(
        tmp_path / "c", rows, server=smtp_server, message={"attachments": ["{{ code }}"]}
    )
    result = batchmail("run", campaign)
    assert result.returncode == 2 and "campaign's directory" in result.stderr
    assert smtp_server.commands == []


def test_csv_problems_reported_with_hints(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    csv_path = tmp_path / "people.csv"
    csv_path.write_bytes(b"email,name,code\na@example.org,Ren\xe9,1\n")
    result = batchmail("check", campaign)
    assert result.returncode == 2 and "recipients.encoding" in result.stderr
    csv_path.write_bytes(b"mail,name,code\na@example.org,A,1\n")
    result = batchmail("run", campaign)
    assert result.returncode == 2 and "no column 'email'" in result.stderr
    assert smtp_server.commands == []


def test_bad_campaign_file_is_one_clear_paragraph(tmp_path: Path) -> None:
    campaign = tmp_path / "c.yaml"
    campaign.write_text("smtp:\n  host: x\n  port: abc\nrecipients: {file: nope.csv}\n")
    result = batchmail("run", campaign)
    assert result.returncode == 2
    assert "smtp.port: expected an integer, line 3" in result.stderr
    assert "recipients.file: nope.csv not found" in result.stderr
    assert "Traceback" not in result.stderr


def _stderr_on_a_terminal(*args: str | Path) -> str:
    """Run batchmail with stderr on a pseudo-terminal of 100 columns; return what it drew."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closes when the child exits
            break
        if not chunk:
            break
        drawn += chunk
    process.wait(timeout=60)
    os.close(master)
    return drawn.decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path / "a", people(4), server=smtp_server)
    drawn = _stderr_on_a_terminal("run", campaign)
    assert "4/4" in drawn and "sent=4" in drawn and "failed=0" in drawn
    quiet = write_campaign(tmp_path / "b", people(4), server=smtp_server)
    assert "4/4" not in _stderr_on_a_terminal("run", quiet, "--quiet")
    piped = write_campaign(tmp_path / "c", people(4), server=smtp_server)
    assert batchmail("run", piped).stderr == ""  # not a terminal: no bar


def test_parallel_sessions_share_the_work_and_send_each_recipient_once(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(30), server=smtp_server, send={"sessions": 3})
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    assert "30 sent" in result.stdout
    ids = smtp_server.message_ids()
    assert len(ids) == 30 and len(set(ids)) == 30
    assert smtp_server.commands.count("EHLO") == 3
    assert status_json(campaign)["counts"]["sent"] == 30


class PeerCountingHandler(RecordingHandler):
    """Counts the messages each connection carried. No MAIL is answered until ``gate``
    connections have sent one: every session has taken its first batch before any hears
    back, however slowly the machine starts them."""

    def __init__(self, gate: int = 0) -> None:
        super().__init__()
        self.per_connection: collections.Counter[object] = collections.Counter()
        self.gate = gate
        self._mailing: set[object] = set()  # connections that sent a MAIL

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        self._mailing.add(session.peer)
        while len(self._mailing) < self.gate:  # the server's loop polls; the test does not
            await asyncio.sleep(0.005)
        return None

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        self.per_connection[session.peer] += 1
        return None


def test_parallel_sessions_share_out_a_short_list(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    # 100 messages would fit one BDAT batch (256): one session would take them all and the
    # others would wait with nothing to do.
    handler = PeerCountingHandler(gate=4)
    server = start_smtp_server(handler)
    # The gate holds the first sessions' replies until the last has connected: wait for it.
    smtp = {"host": server.host, "port": server.port, "security": "none", "timeout": 120}
    campaign = write_campaign(tmp_path, people(100), smtp=smtp, send={"sessions": 4})
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    assert len(set(server.message_ids())) == 100
    counts = sorted(handler.per_connection.values())
    assert len(counts) == 4 and sum(counts) == 100, counts
    assert counts[0] >= 10 and counts[-1] <= 45, counts


def test_a_changed_campaign_needs_allow_changed_to_carry_on(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(3)
    rows[1]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server_refusing)
    assert batchmail("run", campaign).returncode == 1
    (tmp_path / "body.txt.j2").write_text("Dear {{ name }}, a new text.\n", encoding="utf-8")
    with (tmp_path / "people.csv").open("a", encoding="utf-8") as handle:
        handle.write("late@example.org,Late,C9\n")  # a new row alone is not a change

    refused = batchmail("run", campaign)
    assert refused.returncode == 2
    assert "campaign changed" in refused.stderr and "message.text (body.txt.j2)" in refused.stderr
    assert "--allow-changed" in refused.stderr
    assert batchmail("resend", campaign).returncode == 2
    assert len(smtp_server_refusing.messages) == 2

    allowed = batchmail("run", campaign, "--allow-changed")
    assert allowed.returncode == 1  # the refused recipient is still failed
    assert len(smtp_server_refusing.messages) == 3
    assert "a new text" in smtp_server_refusing.messages[-1].data.decode()
    # The new content is now the recorded one: no flag needed from here on.
    assert batchmail("resend", campaign).returncode == 1


def test_adding_recipients_is_not_a_change(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    with (tmp_path / "people.csv").open("a", encoding="utf-8") as handle:
        handle.write("late@example.org,Late,C9\n")
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    assert "1 sent" in result.stdout and len(smtp_server.messages) == 3


def test_status_csv_report_keeps_rows_and_adds_three_columns(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(4)
    rows[2]["email"] = "refuse-me@example.org"
    rows[3]["name"] = 'Zoë, "the" tester'
    campaign = write_campaign(
        tmp_path, rows, server=smtp_server_refusing, message={"to": "{{ email }}"}
    )
    assert batchmail("run", campaign).returncode == 1
    report = tmp_path / "report.csv"
    result = batchmail("status", campaign, "--csv", report)
    assert result.returncode == 1
    with report.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [list(r)[:3] for r in written] == [["email", "name", "code"]] * 4
    for original, row in zip(rows, written, strict=True):
        assert {k: row[k] for k in original} == original
    assert [r["batchmail_status"] for r in written] == ["sent", "sent", "failed", "sent"]
    assert written[2]["batchmail_reply"].startswith("550 ")
    assert written[2]["batchmail_sent_at"] == ""
    assert written[0]["batchmail_sent_at"].startswith("20")


def test_test_send_goes_only_to_the_tester_and_leaves_the_journal_alone(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(5), server=smtp_server)
    result = batchmail("run", campaign, "--test-to", "Tester <me@example.net>", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [("me@example.net",)] * 2
    first = parse(smtp_server.messages[0].data)
    assert first["Subject"] == "[TEST] Hello Person 1"
    assert first["To"] == "Person 1 <person1@example.org>"  # the message as it would go
    assert not (tmp_path / ".batchmail/test-campaign/journal.sqlite3").exists()
    assert status_json(campaign)["counts"]["pending"] == 5
    assert batchmail("run", campaign, "--test-to", "a@b.com>, c@d.com").returncode == 2
    assert len(smtp_server.messages) == 2
    assert batchmail("run", campaign).returncode == 0
    assert len(smtp_server.messages) == 7


def test_excluded_addresses_are_never_mailed_and_bounces_feed_the_next_campaign(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(5)
    rows[3]["email"] = "refuse-me@example.org"
    (tmp_path / "unsubscribed.txt").write_text("# people who said no\nPERSON2@example.org\n")
    (tmp_path / "old-bounces.csv").write_text("email,when\nperson5@example.org,2025\n")
    campaign = write_campaign(
        tmp_path,
        rows,
        server=smtp_server_refusing,
        message={"bcc": "{% if row_number == 3 %}person5@example.org{% endif %}"},
    )
    text = campaign.read_text().replace(
        "  file: people.csv\n",
        "  file: people.csv\n  exclude: [unsubscribed.txt, old-bounces.csv]\n",
    )
    campaign.write_text(text)

    result = batchmail("run", campaign)

    assert result.returncode == 1, result.stderr  # refuse-me failed
    assert "3 suppressed" in result.stdout
    mailed = {address for m in smtp_server_refusing.messages for address in m.rcpt_tos}
    assert mailed == {"person1@example.org"}  # row 3 Bccs an excluded address: not sent
    counts = status_json(campaign)["counts"]
    assert counts["suppressed"] == 3 and counts["failed"] == 1 and counts["sent"] == 1
    assert batchmail("resend", campaign).returncode == 1
    assert len(smtp_server_refusing.messages) == 1

    bounces = tmp_path / "bounces.txt"
    assert batchmail("status", campaign, "--export-failed", bounces).returncode == 1
    assert bounces.read_text() == "refuse-me@example.org\n"
    exported_csv = tmp_path / "bounces.csv"
    batchmail("status", campaign, "--export-failed", exported_csv)
    assert exported_csv.read_text().splitlines() == ["email", "refuse-me@example.org"]
    text = campaign.read_text().replace("old-bounces.csv]", "old-bounces.csv, bounces.txt]")
    campaign.write_text(text)
    final = status_json(campaign)
    assert final["counts"]["suppressed"] == 4 and final["counts"]["failed"] == 0
    assert batchmail("status", campaign).returncode == 0


def test_daily_limit_stops_cleanly_and_the_next_day_carries_on(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(7), server=smtp_server, send={"daily_limit": 3})
    day_one = {"BATCHMAIL_NOW": "2026-03-02T09:00:00+00:00"}
    first = batchmail("run", campaign, env=day_one)
    assert first.returncode == 1
    assert "3 sent" in first.stdout and len(smtp_server.messages) == 3
    assert "daily limit of 3 messages reached" in first.stderr
    assert "run again after 2026-03-03 09:00 UTC" in first.stderr
    assert "4 not attempted yet" in first.stderr
    assert (
        batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-02T20:00:00+00:00"}).returncode
        == 1
    )
    assert len(smtp_server.messages) == 3  # still within the same 24 hours
    assert (
        batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-03T09:00:01+00:00"}).returncode
        == 1
    )
    assert len(smtp_server.messages) == 6
    last = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-04T10:00:00+00:00"})
    assert last.returncode == 0 and "daily limit" not in last.stderr
    keys = [m.rcpt_tos[0] for m in smtp_server.messages]
    assert sorted(keys) == sorted(r["email"] for r in people(7))


def test_per_domain_rate_is_accepted_and_sends_everything(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path, people(3), server=smtp_server, send={"per_domain_rate": {"example.org": 50}}
    )
    assert batchmail("run", campaign).returncode == 0
    assert len(smtp_server.messages) == 3


def test_verbose_shows_the_dialogue_without_the_password(
    tmp_path: Path, smtp_server_starttls_requiring_auth: SmtpTestServer
) -> None:
    server = smtp_server_starttls_requiring_auth
    campaign = write_campaign(
        tmp_path,
        people(2),
        server=server,
        smtp={
            "host": server.host,
            "port": server.port,
            "security": "starttls",
            "username": USERNAME,
            "password_env": "TEST_SMTP_PW",
            "ca_file": str(server.ca_file),
        },
    )
    result = batchmail("run", campaign, "--verbose", env={"TEST_SMTP_PW": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert "MAIL FROM:<sender@example.com>" in result.stderr
    assert "AUTH" in result.stderr and "***" in result.stderr
    import base64

    for secret in (
        PASSWORD,
        base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
    ):
        assert secret not in result.stderr + result.stdout
    journal = (tmp_path / ".batchmail/test-campaign/journal.sqlite3").read_bytes()
    assert PASSWORD.encode() not in journal
