"""What `run` and `resend` say at the end, through the real command: the summary agrees with
`status`, says whose counts it gives, and the hint beneath points to a step that helps."""

from __future__ import annotations

import csv
import os
import pty
import signal
import subprocess
import sys
import termios
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


def append_rows(campaign: Path, rows: list[dict[str, str]]) -> None:
    with (campaign.parent / "people.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{r['email']},{r['name']},{r['code']}\n" for r in rows)


def test_the_summary_gives_this_run_s_counts_and_what_it_left_alone_by_status(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(GreylistingHandler())  # "refuse" addresses: 550
    rows = people(4)
    rows[1]["email"] = "refuse-me@example.org"
    campaign = excluding(write_campaign(tmp_path, rows, server=server), "person4@example.org")
    first = batchmail("run", campaign)
    assert first.stdout.startswith(
        "test-campaign, this run: 2 sent, 1 failed, 0 deferred, 0 unknown, "
        "1 suppressed (on an exclusion list). Delivered to"
    ), first.stdout
    append_rows(campaign, people(1, start=5))

    resent = batchmail("resend", campaign)

    assert resent.returncode == 1
    assert resent.stdout == (
        "test-campaign, this run: 0 sent, 1 failed, 0 deferred, 0 unknown; "
        "4 left alone: 2 sent, 1 not attempted, 1 suppressed.\n"
    )
    # Refused for good: the hint points to the export, not to another resend.
    assert resent.stderr.splitlines() == [
        f"1 failed, refused for good (5xx): see `batchmail status {campaign}`; "
        f"`batchmail status {campaign} --export-failed FILE` lists the refused addresses "
        "for recipients.exclude",
        f"1 not attempted yet: `batchmail run {campaign}`",
    ]

    again = batchmail("run", campaign)

    assert again.stdout.startswith(
        "test-campaign, this run: 1 sent, 0 failed, 0 deferred, 0 unknown, "
        "1 suppressed (on an exclusion list); 3 left alone: 2 sent, 1 failed. Delivered to"
    ), again.stdout


def test_the_hint_keeps_resend_while_a_row_is_deferred(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(GreylistingHandler())  # 550 "refuse", 451 "defer" always
    rows = people(3)
    rows[0]["email"] = "refuse-me@example.org"
    rows[1]["email"] = "defer-me@example.org"
    campaign = write_campaign(tmp_path, rows, server=server, send={"retries": 0})

    result = batchmail("run", campaign)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"1 failed and 1 deferred: see `batchmail status {campaign}`, "
        f"then `batchmail resend {campaign}`"
    ]


def test_a_run_with_only_excluded_rows_left_says_nothing_to_send_and_connects_nowhere(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    campaign = excluding(write_campaign(tmp_path, people(2), server=server), "person2@example.org")
    assert batchmail("run", campaign).returncode == 0
    connections = server.commands.count("EHLO")

    again = batchmail("run", campaign)

    assert again.returncode == 0, again.stderr
    assert again.stdout == "test-campaign: nothing to send: 1 sent, 1 suppressed.\n"
    assert server.commands.count("EHLO") == connections == 1


def stderr_on_a_terminal(*args: str | Path) -> str:
    """Run batchmail with stderr on a pseudo-terminal (so it draws its progress bar)."""
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (24, 120))  # a new pty is 0 columns wide: the bar would be too
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    written = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closes when the child exits
            break
        if not chunk:
            break
        written += chunk
    assert process.wait(timeout=60) == 0
    os.close(master)
    return written.decode("utf-8", "replace")


def test_the_progress_bar_counts_only_the_messages_it_will_attempt(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    campaign = excluding(write_campaign(tmp_path, people(3), server=server), "person2@example.org")

    bar = stderr_on_a_terminal("run", campaign)

    assert "100%" in bar and "2/2" in bar and "/3" not in bar, bar
