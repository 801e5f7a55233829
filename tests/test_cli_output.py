"""What the commands print: said once, counted right, quiet when asked (the real ``batchmail``
process against real SMTP servers)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from campaign_files import batchmail, parse, people, write_campaign
from servers import Certificates, SmtpTestServer, StartServer


def test_status_says_a_refusal_once_in_text_and_json(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(2)
    rows[0]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server_refusing)
    assert batchmail("run", campaign).returncode == 1

    text = batchmail("status", campaign).stdout
    (line,) = [line for line in text.splitlines() if "refuse-me@example.org  failed" in line]
    assert line.count("550") == 1 and line.count("mailbox unavailable") == 1, line
    (failed,) = json.loads(batchmail("status", campaign, "--json").stdout)["recipients"]
    assert failed["code"] == 550
    assert failed["reply"] == "5.1.1 <refuse-me@example.org>: mailbox unavailable"


def test_status_of_a_never_run_campaign_counts_pending_and_lists_them_with_all(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(3), server=smtp_server)

    counted = batchmail("status", campaign)
    assert counted.returncode == 1
    assert counted.stdout.splitlines() == [
        "test-campaign: 0 sent, 0 failed, 0 deferred, 0 unknown, 3 pending"
    ]
    listed = batchmail("status", campaign, "--all").stdout.splitlines()
    assert listed[1:] == [f"  row {i}  person{i}@example.org  pending" for i in (1, 2, 3)]
    as_json = json.loads(batchmail("status", campaign, "--json").stdout)
    assert [r["status"] for r in as_json["recipients"]] == ["pending"] * 3


def test_a_run_that_sent_nothing_says_delivered_nowhere(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(1)
    rows[0]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server_refusing)

    result = batchmail("run", campaign)

    assert result.returncode == 1
    assert result.stdout == "test-campaign, this run: 0 sent, 1 failed, 0 deferred, 0 unknown.\n"


def test_one_of_a_thing_is_said_in_the_singular(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(1), server=smtp_server)

    dry = batchmail("run", campaign, "--dry-run")
    test = batchmail("run", campaign, "--test-to", "me@example.net", "--limit", "1")
    report = batchmail("status", campaign, "--csv", tmp_path / "report.csv")
    checked = batchmail("check", campaign)

    assert "wrote 1 message and manifest.csv" in dry.stdout
    assert "test send of 1 message to" in test.stdout
    assert "wrote 1 row to" in report.stderr
    assert "ok, 1 recipient," in checked.stdout
    for output in (dry, test, report, checked):
        assert " 1 messages" not in output.stdout + output.stderr
        assert " 1 rows" not in output.stdout + output.stderr


def test_quiet_prints_the_summary_line_and_nothing_else(
    tmp_path: Path, smtp_server_refusing: SmtpTestServer
) -> None:
    rows = people(2)
    rows[0]["email"] = "refuse-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=smtp_server_refusing)

    quiet = batchmail("run", campaign, "--quiet")

    assert quiet.returncode == 1
    assert quiet.stdout.count("\n") == 1 and "1 sent, 1 failed" in quiet.stdout
    assert quiet.stderr == ""
    loud = batchmail("resend", campaign)
    assert "batchmail status" in loud.stderr  # without --quiet, the next step is said


def test_only_commands_that_could_send_say_nothing_was_sent(tmp_path: Path) -> None:
    (tmp_path / "starter").mkdir()
    (tmp_path / "starter" / "campaign.yaml").write_text("name: mine\n", encoding="utf-8")
    campaign = write_campaign(tmp_path / "c", people(1), smtp="embedded")

    init = batchmail("init", tmp_path / "starter")
    preview = batchmail("preview", campaign, "--row", "9")

    assert init.returncode == 2 and "already exists" in init.stderr
    assert preview.returncode == 2 and "there is no row 9" in preview.stderr
    for result in (init, preview):
        assert "nothing was sent" not in result.stderr
        assert "Traceback" not in result.stderr


def test_sink_help_describes_every_option_and_its_default() -> None:
    text = " ".join(batchmail("sink", "--help").stdout.split())

    assert "--host HOST the address to listen on (default 127.0.0.1" in text
    assert "--port PORT the port to listen on (default 8025)" in text
    assert "--maildir DIR the Maildir every message is stored in" in text
    assert "(default ./sink-maildir)" in text


def test_a_second_dry_run_leaves_only_its_own_files_and_the_users(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(3), server=smtp_server)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    (out / "000009-kept@example.org.eml").write_bytes(b"a user's own file\r\n")
    assert batchmail("run", campaign, "--dry-run", "--out", out).returncode == 0
    first = {p.name for p in out.glob("0*.eml")}

    write_campaign(tmp_path, people(2, start=5), server=smtp_server)  # other keys now
    again = batchmail("run", campaign, "--dry-run", "--out", out)

    assert again.returncode == 0, again.stderr
    with (out / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        listed = {row["file"] for row in csv.DictReader(handle)}
    assert listed == {"000001-person5@example.org.eml", "000002-person6@example.org.eml"}
    assert first - listed - {"000009-kept@example.org.eml"}  # there was something to clear
    assert {p.name for p in out.iterdir()} == listed | {
        "manifest.csv",
        "notes.txt",
        "000009-kept@example.org.eml",
    }


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_for_another_name_says_both_names(
    tmp_path: Path, start_smtp_server: StartServer, security: str
) -> None:
    (tmp_path / "tls").mkdir()
    certificates = Certificates.create(tmp_path / "tls", ("mail.other.example", "other.example"))
    server = start_smtp_server(security=security, certificates=certificates)
    campaign = write_campaign(tmp_path / "c", people(1), server=server)

    result = batchmail("run", campaign)

    assert result.returncode == 3, result.stderr
    assert (
        f"127.0.0.1:{server.port}: the server's TLS certificate is for mail.other.example, "
        "other.example, not for 127.0.0.1, the name connected to; set smtp.host to a name the "
        "certificate is for" in result.stderr
    )
    assert "set smtp.ca_file" not in result.stderr
    assert server.messages == [] and "MAIL" not in server.commands


def test_a_text_attachment_says_its_charset_or_goes_as_bytes(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = [{**row, "notes": f"notes{i}.txt"} for i, row in enumerate(people(2), 1)]
    campaign = write_campaign(
        tmp_path, rows, server=smtp_server, message={"attachments": ["files/{{ notes }}"]}
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "notes1.txt").write_text("Grüße, 王伟\n", encoding="utf-8")
    (tmp_path / "files" / "notes2.txt").write_bytes("Grüße\n".encode("cp1252"))

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    by_key = {m.rcpt_tos[0]: parse(m.data) for m in smtp_server.messages}
    (utf8,) = by_key["person1@example.org"].iter_attachments()
    assert utf8.get_content_type() == "text/plain"
    assert utf8.get_param("charset") == "utf-8"
    assert utf8.get_content() == "Grüße, 王伟\n"
    (other,) = by_key["person2@example.org"].iter_attachments()
    assert other.get_content_type() == "application/octet-stream"
    assert other.get_filename() == "notes2.txt"
    assert other.get_content() == "Grüße\n".encode("cp1252")


def test_help_and_readme_list_the_same_exit_codes() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)
    help_text = " ".join(batchmail("--help").stdout.split())

    assert {"0", "1", "2", "3", "130", "141", "143"} <= set(documented)
    for code in documented:
        assert re.search(rf"[:;] {code} [a-z]", help_text), code
