"""1,000 multilingual names (tests/multilingual.py) under five realistic subjects: every row
is accepted and reads back identical in Python's email package and in the independent
reader of tests/rfc2047_reader.py, in plain and in SMTPUTF8 messages; and ``batchmail
check`` accepts the German invoice campaign through the real command line.

Before batchmail wrote its own encoded words, the email package's folding made the
read-back check refuse 975 of these rows under the German invoice subject, 5 under the
English one, 229 under the Arabic one and 184 under the one with repeated spaces."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
import rfc2047_reader as reader
from campaign_files import batchmail, write_campaign
from multilingual import SUBJECTS, rows

from batchmail.campaign import load_campaign
from batchmail.compose import Composer
from batchmail.recipients import Recipient
from batchmail.render import Renderer


def header_fields(data: bytes) -> dict[str, bytes]:
    block = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    fields = re.findall(rb"[^ \t\r\n][^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", block)
    return {field.split(b":", 1)[0].decode(): field for field in fields}


@pytest.mark.parametrize("smtputf8", [False, True], ids=["ascii-address", "utf8-address"])
@pytest.mark.parametrize("label", sorted(SUBJECTS))
def test_every_name_under_every_subject_reads_back_identical(
    tmp_path: Path, label: str, smtputf8: bool
) -> None:
    people = rows(1000)
    if smtputf8:  # a non-ASCII local part: raw UTF-8 headers (RFC 6532)
        people = [dict(row, email="zoë." + row["email"]) for row in people]
    path = write_campaign(
        tmp_path,
        people,
        smtp="embedded",
        message={"subject": SUBJECTS[label], "headers": {"X-Customer": "{{ name }}"}},
        text="Hallo {{ name }}\n",
        html=None,
    )
    campaign = load_campaign(path)
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)
    identical = 0
    for number, values in enumerate(people, 1):
        recipient = Recipient(number, values["email"], values)
        rendered = renderer.render(recipient)
        data = b"".join(composer.compose(recipient, rendered).parts)  # raises if refused
        subject = rendered.subject.strip(" \t")
        meant = [(values["name"], values["email"])]
        fields = header_fields(data)
        parsed = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
        python_reads = (
            str(parsed["Subject"]),
            [(a.display_name, a.addr_spec) for a in parsed["To"].addresses],
            str(parsed["X-Customer"]),
        )
        own_reads = (
            reader.unstructured(reader.unfold(fields["Subject"])[1]),
            reader.address_list(reader.unfold(fields["To"])[1]),
            reader.unstructured(reader.unfold(fields["X-Customer"])[1]),
        )
        identical += python_reads == own_reads == (subject, meant, values["name"])
    assert identical == 1000


def test_check_accepts_every_row_through_the_command_line(tmp_path: Path) -> None:
    path = write_campaign(
        tmp_path,
        rows(1000),
        smtp="embedded",
        message={"subject": SUBJECTS["invoice-de"]},
        text="Hallo {{ name }}\n",
        html=None,
    )
    result = batchmail("check", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok, 1000 recipients, every message renders" in result.stdout
