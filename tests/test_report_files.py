"""The files batchmail writes for people (status --csv, --export-failed, the dry run's
manifest): never over an input, written whole, private, and safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from campaign_files import batchmail, people, write_campaign
from servers import RefusingHandler, StartServer

from batchmail import spreadsheet

FORMULA = "=1+1@example.org"  # a valid address, and a formula to a spreadsheet


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, inherited by the batchmail processes a test starts."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _campaign(directory: Path) -> Path:
    """A campaign with a template, a shared attachment and an exclusion list: every kind of
    input a report could be pointed at."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "guide.txt").write_text("the guide\n")
    (directory / "unsubscribed.txt").write_text("nobody@example.org\n")
    campaign = write_campaign(
        directory, people(3), smtp="embedded", message={"attachments": ["guide.txt"]}
    )
    text = campaign.read_text().replace(
        "  file: people.csv\n", "  file: people.csv\n  exclude: [unsubscribed.txt]\n"
    )
    campaign.write_text(text)
    return campaign


def _symlink(directory: Path, name: str) -> Path:
    link = directory / "link.csv"
    link.symlink_to(directory / name)
    return link


def _hard_link(directory: Path, name: str) -> Path:
    link = directory / "linked.csv"
    os.link(directory / name, link)
    return link


INPUTS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "campaign": ("the campaign file", lambda d: d / "campaign.yaml"),
    "recipients": ("the recipients file", lambda d: d / "people.csv"),
    "template": ("the template message.text", lambda d: d / "body.txt.j2"),
    "attachment": ("an attachment", lambda d: d / "guide.txt"),
    "exclusion": ("an exclusion list", lambda d: d / "unsubscribed.txt"),
    "symlink": ("the recipients file", lambda d: _symlink(d, "people.csv")),
    "hard link": ("the recipients file", lambda d: _hard_link(d, "people.csv")),
    "journal": (
        "a file of the campaign's state",
        lambda d: d / ".batchmail/test-campaign/journal.sqlite3",
    ),
}


@pytest.mark.parametrize("option", ["--csv", "--export-failed"])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_a_report_over_an_input_is_refused_and_the_input_kept(
    tmp_path: Path, option: str, kind: str
) -> None:
    campaign = _campaign(tmp_path)
    assert batchmail("run", campaign).returncode == 0
    what, target_of = INPUTS[kind]
    target = target_of(tmp_path)
    before = target.read_bytes()

    result = batchmail("status", campaign, option, target)

    assert result.returncode == 2, result.stderr
    assert f"{option}: {target} is {what}" in result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_bytes() == before
    assert batchmail("status", campaign).returncode == 0  # the campaign still reads


def test_a_dry_run_manifest_over_an_input_is_refused(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.csv").symlink_to(tmp_path / "people.csv")
    before = (tmp_path / "people.csv").read_bytes()

    result = batchmail("run", campaign, "--dry-run", "--out", out)

    assert result.returncode == 2, result.stderr
    assert f"--out: {out / 'manifest.csv'} is the recipients file" in result.stderr
    assert (tmp_path / "people.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv"]


def test_a_report_replaces_its_file_and_leaves_other_links_to_it_alone(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path)
    assert batchmail("run", campaign).returncode == 0
    report = tmp_path / "report.csv"
    report.write_text("last week's report\n")
    os.link(report, tmp_path / "archive.csv")

    assert batchmail("status", campaign, "--csv", report).returncode == 0

    assert (tmp_path / "archive.csv").read_text() == "last week's report\n"
    assert report.read_text().startswith("email,name,code,batchmail_status")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def test_files_with_personal_data_are_private_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    campaign = _campaign(tmp_path)
    assert batchmail("run", campaign, "--dry-run").returncode == 0
    assert batchmail("run", campaign).returncode == 0
    assert batchmail("status", campaign, "--csv", tmp_path / "report.csv").returncode == 0
    other = tmp_path / "elsewhere" / "outbox"
    assert batchmail("run", campaign, "--dry-run", "--out", other).returncode == 0

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    state = tmp_path / ".batchmail"
    for directory in (state, state / "test-campaign", state / "test-campaign/outbox", other):
        assert mode(directory) == 0o700, directory
    for file in (state / "test-campaign/outbox/manifest.csv", other / "manifest.csv"):
        assert mode(file) == 0o600, file
    assert mode(tmp_path / "report.csv") == 0o600
    assert mode(tmp_path / "elsewhere") == 0o700  # created for the outbox


class FormulaRefusingHandler(RefusingHandler):
    marker = FORMULA


HOSTILE_NAMES = ['=HYPERLINK("http://x.example","x")', "+1", "-2", "@SUM(1)", "\tTab"]


def test_spreadsheet_formulas_are_neutralised_in_every_csv(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(FormulaRefusingHandler())
    rows = people(len(HOSTILE_NAMES))
    for row, name in zip(rows, HOSTILE_NAMES, strict=True):
        row["name"] = name
    rows[0]["email"] = FORMULA
    campaign = write_campaign(
        tmp_path, rows, server=server, message={"to": "{{ email }}", "subject": "Hello"}
    )
    assert batchmail("run", campaign).returncode == 1
    assert batchmail("run", campaign, "--dry-run").returncode == 0
    report, bounces = tmp_path / "report.csv", tmp_path / "bounces.csv"
    assert (
        batchmail("status", campaign, "--csv", report, "--export-failed", bounces).returncode == 1
    )

    with report.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["name"] for r in written] == ["'" + name for name in HOSTILE_NAMES]
    assert written[0]["email"] == "'" + FORMULA and written[1]["email"] == "person2@example.org"
    assert bounces.read_text().splitlines() == ["email", "'" + FORMULA]
    manifest = tmp_path / ".batchmail/test-campaign/outbox/manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as handle:
        listed = list(csv.DictReader(handle))
    assert listed[0]["key"] == "'" + FORMULA
    assert listed[0]["envelope_recipients"] == "'" + FORMULA
    assert listed[1]["key"] == "person2@example.org"


def test_an_exported_bounce_list_suppresses_the_address_in_the_next_campaign(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(FormulaRefusingHandler())
    rows = people(2)
    rows[0]["email"] = FORMULA
    first = write_campaign(tmp_path / "first", rows, server=server, message={"to": "{{ email }}"})
    assert batchmail("run", first).returncode == 1
    bounces = tmp_path / "bounces.csv"
    assert batchmail("status", first, "--export-failed", bounces).returncode == 1
    assert bounces.read_text().splitlines() == ["email", "'" + FORMULA]

    second = write_campaign(
        tmp_path / "second", rows, server=server, message={"to": "{{ email }}"}, name="second"
    )
    second.write_text(
        second.read_text().replace(
            "  file: people.csv\n", f"  file: people.csv\n  exclude: ['{bounces}']\n"
        )
    )
    result = batchmail("run", second)

    assert result.returncode == 0, result.stderr
    assert "1 suppressed" in result.stdout
    assert [m.rcpt_tos for m in server.messages] == [("person2@example.org",)] * 2


def test_cells_are_quoted_and_read_back() -> None:
    for text in ("=1+1", "+44 20", "-3", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet.cell(text) == "'" + text
        assert spreadsheet.readings(spreadsheet.cell(text)) == ("'" + text, text)
    for text in ("ann@example.org", "'quoted", "", "12"):
        assert spreadsheet.cell(text) == text
        assert spreadsheet.readings(text) == (text,)
