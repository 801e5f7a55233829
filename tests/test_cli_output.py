"""What the commands print: said once, counted right, quiet when asked (the real ``batchmail``
process against real SMTP servers)."""

from __future__ import annotations

import json
from pathlib import Path

from campaign_files import batchmail, people, write_campaign
from servers import SmtpTestServer


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
