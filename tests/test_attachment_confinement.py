"""A CSV value cannot attach the campaign's own files: the real ``batchmail check`` and
``batchmail run --dry-run`` on real campaign directories, links and all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from campaign_files import batchmail, parse, people, write_campaign

PDF = b"%PDF-1.4 an invoice\n"
STATE = ".batchmail/test-campaign"


def campaign_with(directory: Path, value: str, pattern: str = "files/{{ file }}") -> Path:
    """A campaign whose row 1 attaches files/a.pdf and row 2 the file ``value`` names."""
    rows = [{**row, "file": name} for row, name in zip(people(2), ["a.pdf", value], strict=True)]
    if not pattern.startswith("files/"):
        rows[0]["file"] = "files/a.pdf"
    campaign = write_campaign(
        directory, rows, smtp="embedded", message={"attachments": [pattern]}, html=None
    )
    (directory / "files").mkdir()
    (directory / "files" / "a.pdf").write_bytes(PDF)
    (directory / STATE).mkdir(parents=True)
    (directory / STATE / "journal.sqlite3").write_bytes(b"SQLite format 3\x00 every address")
    return campaign


def refused(campaign: Path, reason: str, pattern: str = "files/{{ file }}") -> None:
    """``check`` and ``run --dry-run`` both refuse row 2 for ``reason``, writing nothing."""
    out = campaign.parent / "out"
    for command in (("check",), ("run", "--dry-run", "--out", str(out))):
        result = batchmail(*command, campaign)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[1:] == [
            f"  people.csv, row 2, message.attachments[0]: {pattern} (column file): {reason}"
        ]
        assert not out.exists() or not list(out.glob("*.eml"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("../people.csv", "'files/../people.csv' leaves the directory {files}/"),
        (
            f"../{STATE}/journal.sqlite3",
            f"'files/../{STATE}/journal.sqlite3' leaves the directory {{files}}/",
        ),
        ("../campaign.yaml", "'files/../campaign.yaml' leaves the directory {files}/"),
        ("../body.txt.j2", "'files/../body.txt.j2' leaves the directory {files}/"),
        ("sub/../../people.csv", "'files/sub/../../people.csv' leaves the directory {files}/"),
        ("/etc/passwd", "renders to 'files//etc/passwd': a value is an absolute path, or empty"),
        (
            "{directory}/people.csv",
            "renders to 'files/{directory}/people.csv': a value is an absolute path, or empty",
        ),
    ],
)
def test_a_value_cannot_leave_the_directory_of_the_literal_prefix(
    tmp_path: Path, value: str, reason: str
) -> None:
    campaign = campaign_with(tmp_path, value.format(directory=tmp_path))
    refused(campaign, reason.format(files=tmp_path / "files", directory=tmp_path))


def test_a_symlink_in_the_directory_cannot_lead_to_the_recipients(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, "list.pdf")
    (tmp_path / "files" / "list.pdf").symlink_to("../people.csv")
    refused(campaign, f"'files/list.pdf' leaves the directory {tmp_path / 'files'}/")


def test_a_hard_link_to_the_recipients_or_the_journal_is_refused(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, "list.pdf")
    os.link(tmp_path / "people.csv", tmp_path / "files" / "list.pdf")
    refused(
        campaign,
        "'files/list.pdf' is the recipients file people.csv: "
        "the campaign's own files are never attached",
    )
    (tmp_path / "files" / "list.pdf").unlink()
    os.link(tmp_path / STATE / "journal.sqlite3", tmp_path / "files" / "list.pdf")
    refused(
        campaign,
        "'files/list.pdf' is in batchmail's state directory (.batchmail/): "
        "the campaign's own files are never attached",
    )


@pytest.mark.parametrize(
    ("value", "own"),
    [
        ("people.csv", "the recipients file people.csv"),
        ("files/../people.csv", "the recipients file people.csv"),
        ("./campaign.yaml", "the campaign file campaign.yaml"),
        ("body.txt.j2", "the template body.txt.j2 (message.text)"),
        (f"{STATE}/journal.sqlite3", "in batchmail's state directory (.batchmail/)"),
        (f"files/../{STATE}/journal.sqlite3", "in batchmail's state directory (.batchmail/)"),
    ],
)
def test_without_a_literal_directory_the_campaigns_own_files_are_still_refused(
    tmp_path: Path, value: str, own: str
) -> None:
    campaign = campaign_with(tmp_path, value, pattern="{{ file }}")
    reason = f"{value!r} is {own}: the campaign's own files are never attached"
    refused(campaign, reason, pattern="{{ file }}")


def test_an_exclusion_list_is_refused(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, "bounces.txt", pattern="{{ file }}")
    (tmp_path / "bounces.txt").write_text("someone@example.org\n")
    text = campaign.read_text().replace(
        "file: people.csv", "file: people.csv\n  exclude: bounces.txt"
    )
    campaign.write_text(text)
    reason = (
        "'bounces.txt' is the exclusion list bounces.txt: "
        "the campaign's own files are never attached"
    )
    refused(campaign, reason, pattern="{{ file }}")


def test_a_file_in_the_directory_is_attached(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, "a.pdf")
    assert batchmail("check", campaign).returncode == 0

    result = batchmail("run", campaign, "--dry-run", "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    messages = sorted((tmp_path / "out").glob("*.eml"))
    assert len(messages) == 2
    for path in messages:
        *_, attachment = parse(path.read_bytes()).iter_parts()
        assert (attachment.get_filename(), attachment.get_content()) == ("a.pdf", PDF)
