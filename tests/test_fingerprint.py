"""Editing how to send is not editing what is sent: the campaign's fingerprint, end to end
through ``batchmail`` against a real server and a real journal."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from campaign_files import batchmail, parse, people, write_campaign
from servers import SmtpTestServer

Edit = Callable[[dict[str, Any]], None]


def edit_yaml(campaign: Path, change: Edit) -> None:
    document = yaml.safe_load(campaign.read_text(encoding="utf-8"))
    change(document)
    campaign.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def add_row(campaign: Path, number: int) -> None:
    with (campaign.parent / "people.csv").open("a", encoding="utf-8") as handle:
        handle.write(f"late{number}@example.org,Late {number},C{number}\n")


def set_in(section: str, key: str, value: Any) -> Edit:
    return lambda document: document[section].__setitem__(key, value)


def test_editing_how_to_send_carries_on_editing_what_is_sent_is_refused(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    edits: list[Edit] = [
        set_in("send", "rate", 50),
        set_in("send", "retries", 5),
        set_in("smtp", "host", "localhost"),  # the same server, by another name
        set_in("smtp", "timeout", 7),
    ]
    for number, change in enumerate(edits, 1):
        edit_yaml(campaign, change)
        add_row(campaign, number)
        result = batchmail("run", campaign)
        assert result.returncode == 0, result.stderr
        assert len(smtp_server.messages) == 2 + number
    text = campaign.read_text(encoding="utf-8")
    campaign.write_text(f"# sent in spring\n{text.replace(': ', ':   ')}", encoding="utf-8")
    add_row(campaign, 9)
    assert batchmail("run", campaign).returncode == 0
    assert len(smtp_server.messages) == 7

    edit_yaml(campaign, lambda document: document["message"].__setitem__("subject", "Hi"))
    add_row(campaign, 10)
    refused = batchmail("run", campaign)

    assert refused.returncode == 2
    assert "the campaign changed" in refused.stderr and "message.subject" in refused.stderr
    assert "Recipients already sent got the old content" in refused.stderr
    assert len(smtp_server.messages) == 7
    allowed = batchmail("run", campaign, "--allow-changed")
    assert allowed.returncode == 0, allowed.stderr
    assert parse(smtp_server.messages[-1].data)["Subject"] == "Hi"


def older_fingerprint(directory: Path) -> dict[str, str]:
    """The fingerprint an older batchmail recorded: the whole campaign file, the templates."""

    def digest(name: str) -> str:
        data = (directory / name).read_bytes()
        return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"

    return {
        "campaign.yaml": digest("campaign.yaml"),
        "message.text (body.txt.j2)": digest("body.txt.j2"),
        "message.html (body.html.j2)": digest("body.html.j2"),
    }


def recorded(directory: Path, fingerprint: dict[str, str] | None = None) -> dict[str, str]:
    """The journal's fingerprint; replaced by ``fingerprint`` first if given."""
    journal = directory / ".batchmail" / "test-campaign" / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        if fingerprint is not None:
            value = json.dumps(fingerprint, sort_keys=True)
            db.execute("UPDATE meta SET value = ? WHERE name = 'fingerprint'", (value,))
        (value,) = db.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()
    db.close()
    return dict(json.loads(value))


def test_an_unchanged_campaign_with_an_older_fingerprint_carries_on_and_is_upgraded(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    recorded(tmp_path, older_fingerprint(tmp_path))
    add_row(campaign, 1)

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert len(smtp_server.messages) == 3
    assert recorded(tmp_path)["format"] == "2"


@pytest.mark.parametrize("edit", ["comment", "subject"])
def test_a_campaign_file_changed_under_an_older_fingerprint_is_refused(
    tmp_path: Path, smtp_server: SmtpTestServer, edit: str
) -> None:
    campaign = write_campaign(tmp_path, people(2), server=smtp_server)
    assert batchmail("run", campaign).returncode == 0
    recorded(tmp_path, older_fingerprint(tmp_path))
    if edit == "comment":
        campaign.write_text("# edited\n" + campaign.read_text(encoding="utf-8"))
    else:
        edit_yaml(campaign, lambda document: document["message"].__setitem__("subject", "Hi"))
    add_row(campaign, 1)

    refused = batchmail("run", campaign)

    assert refused.returncode == 2
    assert "campaign.yaml (its fingerprint was recorded by an older batchmail" in refused.stderr
    assert len(smtp_server.messages) == 2
    assert batchmail("run", campaign, "--allow-changed").returncode == 0
    assert len(smtp_server.messages) == 3
    assert recorded(tmp_path)["format"] == "2"
