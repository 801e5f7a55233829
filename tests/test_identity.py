"""One mailbox, one person: keys and exclusions compare addresses as addresses (case, spaces,
IDNA), end to end through ``batchmail`` against a real server and real journal files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from campaign_files import batchmail, status_json, write_campaign
from servers import SmtpTestServer

SPELLINGS = [
    "ann@example.org",
    "Ann@Example.org",
    "ann@EXAMPLE.ORG",
    " ann@example.org",
    "ann@example.org ",
]


def rows_of(emails: list[str]) -> list[dict[str, str]]:
    return [{"email": e, "name": f"P{i}", "code": f"C{i}"} for i, e in enumerate(emails, 1)]


def write_csv(directory: Path, emails: list[str]) -> None:
    lines = ["email,name,code"] + [f'"{e}",P{i},C{i}' for i, e in enumerate(emails, 1)]
    (directory / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def received(server: SmtpTestServer) -> list[str]:
    return [address for message in server.messages for address in message.rcpt_tos]


def test_five_spellings_of_one_address_are_duplicates_naming_both_rows(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, rows_of(SPELLINGS), server=smtp_server)
    write_csv(tmp_path, SPELLINGS)

    checked = batchmail("check", campaign)

    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    for row in range(2, 6):
        assert f"row {row} (line {row + 1}), column email: duplicate key" in checked.stderr
    assert checked.stderr.count("(first on row 1") == 4
    assert "the same address as 'ann@example.org'" in checked.stderr
    assert batchmail("run", campaign).returncode == 2
    assert smtp_server.messages == []


def test_cleaning_the_spreadsheet_mails_nobody_again(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    written = ["Ann@Example.org", " bob@example.org", "CARL@EXAMPLE.ORG "]
    campaign = write_campaign(tmp_path, rows_of(written), server=smtp_server)
    write_csv(tmp_path, written)
    first = batchmail("run", campaign)
    assert first.returncode == 0, first.stderr
    # The envelope has the addresses as written (trimmed by the address parser), not lowered.
    assert received(smtp_server) == ["Ann@Example.org", "bob@example.org", "CARL@EXAMPLE.ORG"]

    write_csv(tmp_path, [e.strip().lower() for e in written])
    again = batchmail("run", campaign)

    assert again.returncode == 0, again.stderr
    assert "nothing to send" in again.stdout
    assert len(smtp_server.messages) == 3
    assert status_json(campaign)["counts"]["sent"] == 3


def journal_of(campaign: Path) -> Path:
    return campaign.parent / ".batchmail" / "test-campaign" / "journal.sqlite3"


def as_older_journal(campaign: Path, spelled: dict[str, str]) -> None:
    """Make the journal look like one an older batchmail wrote: keys as the CSV spelled them,
    no note that keys are compared."""
    with sqlite3.connect(journal_of(campaign)) as db:
        for compared, raw in spelled.items():
            db.execute("UPDATE entries SET key = ? WHERE key = ?", (raw, compared))
        db.execute("DELETE FROM meta WHERE name = 'keys'")
    db.close()


def test_a_journal_keyed_by_raw_spellings_still_finds_its_rows(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    written = ["Ann@Example.org", " bob@example.org"]
    campaign = write_campaign(tmp_path, rows_of(written), server=smtp_server)
    write_csv(tmp_path, written)
    assert batchmail("run", campaign).returncode == 0
    older = {"ann@example.org": "Ann@Example.org", "bob@example.org": " bob@example.org"}
    as_older_journal(campaign, older)
    write_csv(tmp_path, ["ann@example.org", "bob@example.org", "new@example.org"])

    counts = status_json(campaign)["counts"]  # read without rewriting the file
    assert counts["sent"] == 2 and counts["pending"] == 1
    with sqlite3.connect(journal_of(campaign)) as db:
        assert {k for (k,) in db.execute("SELECT key FROM entries")} == set(older.values())
    db.close()
    again = batchmail("run", campaign)

    assert again.returncode == 0, again.stderr
    assert received(smtp_server)[2:] == ["new@example.org"]
    with sqlite3.connect(journal_of(campaign)) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM entries")}
    db.close()
    assert keys == {"ann@example.org", "bob@example.org", "new@example.org"}


def test_a_journal_holding_two_spellings_of_one_address_is_refused(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    written = ["ann@example.org", "other@example.org", "zed@example.org"]
    campaign = write_campaign(tmp_path, rows_of(written), server=smtp_server)
    write_csv(tmp_path, written[:2])
    assert batchmail("run", campaign).returncode == 0
    as_older_journal(campaign, {"other@example.org": "ANN@example.org"})
    write_csv(tmp_path, written)

    status = batchmail("status", campaign)
    again = batchmail("run", campaign)

    for result in (status, again):
        assert result.returncode == 3, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "'ann@example.org' and 'ANN@example.org'" in result.stderr or (
            "'ANN@example.org' and 'ann@example.org'" in result.stderr
        )
    assert len(smtp_server.messages) == 2


def test_exclusions_match_the_address_sent_in_either_idna_form_and_any_case(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = [
        {"id": "1", "email": "bob@bücher.example", "name": "Bob", "code": "1"},
        {"id": "2", "email": "carl@xn--bcher-kva.example", "name": "Carl", "code": "2"},
        {"id": "3", "email": "Dora@Example.org", "name": "Dora", "code": "3"},
        {"id": "4", "email": "eve@bücher.example", "name": "Eve", "code": "4"},
        {"id": "5", "email": "fred@example.org", "name": "Fred", "code": "5"},
    ]
    (tmp_path / "no.txt").write_text(
        "bob@xn--bcher-kva.example\ncarl@bücher.example\ndora@EXAMPLE.ORG\nEVE@BÜCHER.example\n",
        encoding="utf-8",
    )
    campaign = write_campaign(tmp_path, rows, server=smtp_server)
    text = campaign.read_text(encoding="utf-8").replace(
        "  file: people.csv\n", "  file: people.csv\n  key: id\n  exclude: [no.txt]\n"
    )
    campaign.write_text(text, encoding="utf-8")

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert "4 suppressed" in result.stdout
    assert received(smtp_server) == ["fred@example.org"]
    assert status_json(campaign)["counts"]["suppressed"] == 4
