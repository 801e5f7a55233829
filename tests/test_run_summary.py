"""What `run` and `resend` say at the end, through the real command: the summary agrees with
`status`, says whose counts it gives, and the hint beneath points to a step that helps."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

from campaign_files import batchmail, people, status_json, write_campaign
from servers import GreylistingHandler, StartServer


def test_a_run_stopped_while_a_retry_waits_counts_that_row_deferred(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(GreylistingHandler())  # "defer" addresses: 451, always
    rows = people(4)
    rows[1]["email"] = "defer-me@example.org"
    send = {"retries": 2, "retry_delay": 600}  # the retry waits until the stop
    campaign = write_campaign(tmp_path, rows, server=server, send=send)
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", "run", str(campaign)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "retry 1 of 2" in line:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert status_json(campaign)["counts"]["deferred"] == 1
    assert "3 sent, 0 failed, 1 deferred, 0 unknown" in stdout, stdout


def excluding(campaign: Path, *addresses: str) -> Path:
    """``campaign`` with an exclusion list naming ``addresses``."""
    (campaign.parent / "unsubscribed.txt").write_text("".join(f"{a}\n" for a in addresses))
    text = campaign.read_text().replace(
        "  file: people.csv\n", "  file: people.csv\n  exclude: [unsubscribed.txt]\n"
    )
    campaign.write_text(text)
    return campaign


def test_status_csv_labels_an_excluded_row_suppressed_as_status_does(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    campaign = write_campaign(tmp_path, people(3), server=server)
    excluding(campaign, "person2@example.org")
    assert batchmail("run", campaign).returncode == 0
    report = tmp_path / "report.csv"

    assert batchmail("status", campaign, "--csv", report).returncode == 0

    with report.open(newline="") as handle:
        statuses = [row["batchmail_status"] for row in csv.DictReader(handle)]
    assert statuses == ["sent", "suppressed", "sent"]
    assert "  row 2  person2@example.org  suppressed" in batchmail("status", campaign).stdout
