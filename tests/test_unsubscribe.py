"""One-click unsubscribe (RFC 8058) end to end: the real ``batchmail`` process, a real SMTP
server, the received messages parsed back; refusals named by row; the bulk warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from campaign_files import batchmail, parse, people, write_campaign
from servers import SmtpTestServer

from batchmail.headers import split_fields

POST = "List-Unsubscribe=One-Click"
UNSUBSCRIBE = {"url": "https://example.org/u/{{ code }}", "mailto": "unsubscribe@example.org"}
TEXT = "Dear {{ name }},\nto unsubscribe: {{ unsubscribe_url }}\n"
HTML = '<p>Dear {{ name }}, <a href="{{ unsubscribe_url }}">unsubscribe</a></p>\n'


def raw_header(data: bytes, name: str) -> bytes:
    """A header field exactly as it is on the wire (folding included)."""
    fields = split_fields(data[: data.index(b"\r\n\r\n") + 2])
    assert not isinstance(fields, str), fields
    (field,) = [folded for found, folded in fields if found == name]
    return field


def test_every_message_carries_list_unsubscribe_and_the_url_in_its_body(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path,
        people(3),
        server=smtp_server,
        message={"unsubscribe": UNSUBSCRIBE, "subject": "News ({{ unsubscribe_url }})"},
        text=TEXT,
        html=HTML,
    )

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert len(smtp_server.messages) == 3
    for index, received in enumerate(smtp_server.messages, 1):
        url = f"https://example.org/u/C{index:05d}"
        message = parse(received.data)
        assert message["List-Unsubscribe"] == f"<{url}>, <mailto:unsubscribe@example.org>"
        assert message["List-Unsubscribe-Post"] == POST
        assert len(message.get_all("List-Unsubscribe")) == 1
        # On the wire: the URL as it is (no encoded word), one line per entry if folded.
        assert b"=?" not in raw_header(received.data, "List-Unsubscribe")
        assert f"<{url}>".encode() in raw_header(received.data, "List-Unsubscribe")
        assert raw_header(received.data, "List-Unsubscribe-Post") == (
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        )
        assert message["Subject"] == f"News ({url})"
        assert f"to unsubscribe: {url}\r\n" in message.get_body(("plain",)).get_content()
        assert f'<a href="{url}">unsubscribe</a>' in message.get_body(("html",)).get_content()


def test_the_url_alone_and_a_long_url_stay_whole(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    long_token = "t" * 120
    rows = [{**people(1)[0], "code": long_token}, {**people(2)[1], "code": "short"}]
    campaign = write_campaign(
        tmp_path,
        rows,
        server=smtp_server,
        message={"unsubscribe": {"url": "https://example.org/unsubscribe?list=7&t={{ code }}"}},
    )

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    first, second = (received.data for received in smtp_server.messages)
    long_url = f"https://example.org/unsubscribe?list=7&t={long_token}"
    assert raw_header(first, "List-Unsubscribe") == f"List-Unsubscribe: <{long_url}>\r\n".encode()
    assert parse(first)["List-Unsubscribe"] == f"<{long_url}>"
    assert parse(second)["List-Unsubscribe"] == ("<https://example.org/unsubscribe?list=7&t=short>")
    assert parse(second)["List-Unsubscribe-Post"] == POST


def test_a_long_url_with_a_mailto_is_folded_between_the_entries(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path,
        people(1),
        server=smtp_server,
        message={"unsubscribe": {**UNSUBSCRIBE, "url": "https://example.org/" + "u" * 70}},
    )

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    (received,) = smtp_server.messages
    assert raw_header(received.data, "List-Unsubscribe") == (
        b"List-Unsubscribe: <https://example.org/" + b"u" * 70 + b">,\r\n"
        b" <mailto:unsubscribe@example.org>\r\n"
    )


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://example.org/u/1", "is http://; one-click unsubscribe (RFC 8058) needs https://"),
        ("https://example.org/u/1\r\nBcc: victim@example.net", "contains a line break"),
        ("https://example.org/u/1\nX: y", "contains a line break"),
        ("https://example.org/u/a b", "contains whitespace"),
        ("https://example.org/u/1>, <https://evil.example", "contains"),
        ("https://example.org/u/a<b", "contains an angle bracket"),
        ("https://example.org/u/1,2", "contains a comma"),
        ("https://example.org/u/zoë", "which a URL cannot hold as it is; percent-encode it"),
        ("mailto:a@example.org", "is not an https:// URL"),
        ("https:///nohost", "has no host name"),
        ("", "renders to an empty URL"),
    ],
)
def test_a_bad_rendered_url_refuses_its_row_and_nothing_is_sent(
    tmp_path: Path, smtp_server: SmtpTestServer, url: str, complaint: str
) -> None:
    rows = [{**row, "url": f"https://example.org/u/{row['code']}"} for row in people(3)]
    rows[1]["url"] = url
    campaign = write_campaign(
        tmp_path, rows, server=smtp_server, message={"unsubscribe": {"url": "{{ url }}"}}
    )

    for command in ("check", "run"):
        result = batchmail(command, campaign)

        assert result.returncode == 2, result.stdout
        assert "people.csv, row 2, message.unsubscribe.url: " in result.stderr
        assert complaint in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 2  # the heading and one problem
    assert smtp_server.messages == [] and smtp_server.commands == []


def campaign_problems(tmp_path: Path, unsubscribe: Any, **message: Any) -> str:
    campaign = write_campaign(
        tmp_path, people(1), smtp="embedded", message={"unsubscribe": unsubscribe, **message}
    )
    result = batchmail("check", campaign)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


def test_the_url_is_required(tmp_path: Path) -> None:
    stderr = campaign_problems(tmp_path, {"mailto": "unsubscribe@example.org"})
    assert "campaign.yaml: message.unsubscribe.url: missing: one-click unsubscribe" in stderr


@pytest.mark.parametrize(
    ("mailto", "complaint"),
    [
        ("not an address", "not a valid email address"),
        ("a@example.org, b@example.org", "is not one plain address"),
        ("Unsub <u@example.org>", "is not one plain address"),
        ("u?subject=x@example.org", "cannot go into a mailto: URL as it is"),
        ("zoë@example.org", "non-ASCII part before the @"),
    ],
)
def test_the_mailto_must_be_one_plain_address(tmp_path: Path, mailto: str, complaint: str) -> None:
    stderr = campaign_problems(tmp_path, {"url": "https://example.org/u", "mailto": mailto})
    assert "message.unsubscribe.mailto: " in stderr and complaint in stderr


def test_unknown_keys_and_an_extra_list_unsubscribe_header_are_refused(tmp_path: Path) -> None:
    stderr = campaign_problems(tmp_path, {"url": "https://example.org/u", "mail": "x@y.org"})
    assert "message.unsubscribe.mail: unknown key" in stderr
    stderr = campaign_problems(
        tmp_path / "second",
        {"url": "https://example.org/u"},
        headers={"List-Unsubscribe": "<https://other.example/u>"},
    )
    assert "message.headers.List-Unsubscribe" in stderr
    assert "writes the List-Unsubscribe header itself from message.unsubscribe" in stderr


def test_without_unsubscribe_an_extra_list_unsubscribe_header_still_works(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path,
        people(1),
        server=smtp_server,
        message={"headers": {"List-Unsubscribe": "<mailto:leave@example.org>"}},
    )
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr
    message = parse(smtp_server.messages[0].data)
    assert message["List-Unsubscribe"] == "<mailto:leave@example.org>"
    assert message["List-Unsubscribe-Post"] is None


# --- the bulk warning -------------------------------------------------------------------------

WARNING = "more than 1,000 recipients"


@pytest.mark.parametrize(
    ("rows", "unsubscribe", "warned"),
    [(1001, None, True), (1001, UNSUBSCRIBE, False), (1000, None, False)],
)
def test_check_warns_about_a_bulk_campaign_without_unsubscribe(
    tmp_path: Path, rows: int, unsubscribe: dict[str, str] | None, warned: bool
) -> None:
    message = {"unsubscribe": unsubscribe} if unsubscribe else {}
    campaign = write_campaign(tmp_path, people(rows), smtp="embedded", message=message)

    result = batchmail("check", campaign)

    assert result.returncode == 0, result.stderr  # a warning never fails the check
    assert f"ok, {rows} recipients, every message renders" in result.stdout
    if warned:
        assert result.stderr.splitlines() == [
            "batchmail: 1 warning:",
            "  campaign.yaml, message, line 5: more than 1,000 recipients (1,001) and no "
            "`unsubscribe`: Gmail and Yahoo require one-click unsubscribe (RFC 8058) from "
            "bulk senders and may refuse or spam-folder this mail; add "
            '`unsubscribe: {url: "https://..."}` under message',
        ]
    else:
        assert result.stderr == ""


def test_run_repeats_the_warning_unless_quiet(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, people(1001), smtp="embedded")

    result = batchmail("run", campaign, "--dry-run", "--out", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert "batchmail: 1 warning:" in result.stderr and WARNING in result.stderr
    assert "wrote 1001 messages" in result.stdout

    quiet = batchmail("run", campaign, "--dry-run", "--out", tmp_path / "out2", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert WARNING not in quiet.stderr
