"""Message-IDs: the same at every attempt of one campaign, different between campaigns and for
every test send; the dry run shows the ones the run sends. End to end through ``batchmail``."""

from __future__ import annotations

import csv
import hashlib
import mailbox
import sqlite3
import stat
from pathlib import Path

from campaign_files import batchmail, parse, people, status_json, write_campaign
from servers import SmtpTestServer


def manifest_ids(outbox: Path) -> dict[str, str]:
    """Recipient key -> Message-ID, from a dry run's manifest.csv."""
    with (outbox / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return {row["key"]: row["message_id"] for row in csv.DictReader(handle)}


def ids_by_recipient(datas: list[bytes]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for data in datas:
        message = parse(data)
        to = message["To"].addresses[0].addr_spec
        found.setdefault(to, set()).add(str(message["Message-ID"]))
    return found


def test_two_campaigns_from_init_give_one_person_different_message_ids(tmp_path: Path) -> None:
    ids = []
    for name in ("first", "second"):
        assert batchmail("init", tmp_path / name).returncode == 0
        campaign = tmp_path / name / "campaign.yaml"
        dry = batchmail("run", campaign, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        planned = manifest_ids(tmp_path / name / ".batchmail" / "starter" / "outbox")
        ran = batchmail("run", campaign)
        assert ran.returncode == 0, ran.stderr
        sink = mailbox.Maildir(tmp_path / name / ".batchmail" / "starter" / "sink", create=False)
        sent = ids_by_recipient([message.as_bytes() for message in sink])
        assert {key: {value} for key, value in planned.items()} == sent  # dry run == run
        id_file = tmp_path / name / ".batchmail" / "starter" / "campaign-id"
        assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
        ids.append(planned)
    first, second = ids
    assert first.keys() == second.keys() == {"ada@example.org", "grace@example.org"}
    assert first["ada@example.org"] != second["ada@example.org"]


def test_check_preview_and_a_refused_run_write_no_campaign_id(tmp_path: Path) -> None:
    assert batchmail("init", tmp_path).returncode == 0
    campaign = tmp_path / "campaign.yaml"
    assert batchmail("check", campaign).returncode == 0
    assert batchmail("preview", campaign).returncode == 0
    with (tmp_path / "recipients.csv").open("a", encoding="utf-8") as handle:
        handle.write("Ada@Example.org,Ada again\n")
    assert batchmail("run", campaign).returncode == 2
    assert batchmail("run", campaign, "--dry-run").returncode == 2
    assert not (tmp_path / ".batchmail").exists()


def test_a_resend_keeps_the_message_id(
    tmp_path: Path, smtp_server_dropping: SmtpTestServer
) -> None:
    handler = smtp_server_dropping.handler
    handler.drop_at = "end_of_data"  # type: ignore[attr-defined]
    handler.drop_after = 1  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, people(3), server=smtp_server_dropping)
    assert batchmail("run", campaign).returncode == 1
    assert batchmail("resend", campaign, "--include-unknown").returncode == 0

    datas = [m.data for m in handler.unacknowledged + smtp_server_dropping.messages]
    found = ids_by_recipient(datas)
    assert len(datas) > len(found) == 3  # someone got it twice ...
    assert all(len(ids) == 1 for ids in found.values())  # ... with the same Message-ID
    assert journalled_ids(campaign) == {key: ids.pop() for key, ids in found.items()}


def journalled_ids(campaign: Path) -> dict[str, str]:
    journal = campaign.parent / ".batchmail" / "test-campaign" / "journal.sqlite3"
    db = sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT key, message_id FROM entries").fetchall())
    finally:
        db.close()


def test_the_dry_run_shows_the_message_ids_the_run_sends(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(3), server=smtp_server)
    outbox = tmp_path / "elsewhere"
    assert batchmail("run", campaign, "--dry-run", "--out", outbox).returncode == 0
    assert batchmail("run", campaign).returncode == 0
    sent = ids_by_recipient([m.data for m in smtp_server.messages])
    assert {key: {value} for key, value in manifest_ids(outbox).items()} == sent


def test_every_test_send_has_message_ids_of_its_own(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    for _ in range(2):
        assert batchmail("run", campaign, "--test-to", "qa@example.net").returncode == 0
    assert batchmail("run", campaign).returncode == 0

    ids = [str(parse(m.data)["Message-ID"]) for m in smtp_server.messages]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert status_json(campaign)["counts"]["sent"] == 2


def test_a_campaign_an_older_batchmail_started_keeps_its_message_ids(
    tmp_path: Path, smtp_server_deferring: SmtpTestServer
) -> None:
    rows = people(2)
    rows[1]["email"] = "defer-me@example.org"
    smtp_server_deferring.handler.defer_times = 3  # type: ignore[attr-defined]
    campaign = write_campaign(tmp_path, rows, server=smtp_server_deferring, send={"retries": 0})
    assert batchmail("run", campaign).returncode == 1
    # What an older batchmail leaves: a journal, no campaign id (its IDs came from the name).
    (tmp_path / ".batchmail/test-campaign/campaign-id").unlink()

    for _ in range(3):
        batchmail("resend", campaign)

    assert status_json(campaign)["counts"]["sent"] == 2
    digest = hashlib.sha256(b"test-campaign\0defer-me@example.org").hexdigest()[:32]
    last = parse(smtp_server_deferring.messages[-1].data)
    assert last["To"].addresses[0].addr_spec == "defer-me@example.org"
    assert last["Message-ID"] == f"<{digest}.batchmail@example.com>"
    assert not (tmp_path / ".batchmail/test-campaign/campaign-id").exists()
