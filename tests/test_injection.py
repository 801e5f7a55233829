"""Hostile CSV values cannot add a header, a recipient or a body part.

Arbitrary Unicode (control characters, CR/LF, NEL, U+2028/2029, encoded-word syntax
``=?...?=``, quotes, commas, semicolons, angle brackets, backslashes, very long words,
non-ASCII of every width) is placed in display names, the subject, an extra header, an
address position and the body. Every row must then either be refused (CampaignError,
every problem naming the row and the field) or compose to bytes that read back exactly
as meant, by two readers:

- ``email`` with ``policy.default`` (RFC 6532 text for an SMTPUTF8 message): the same
  header names in the same order and number, each value decoding to the intended text,
  To/Cc addresses equal to the addresses the template and the validated values make,
  the intended bodies and nothing but the intended MIME parts;
- a strict split of the raw header block at CRLF not followed by a blank, which must
  find the same header names.

The envelope must be exactly To + Cc + Bcc. Python 3.11.7's email package is vulnerable
(CVE-2024-6923, CVE-2025-1795, CVE-2023-27043): the examples below include their
triggers, and the property holds because compose refuses what the package would mangle.

Hypothesis settings: ``max_examples=300, deadline=None`` for each of the two composers
(the fast path and the EmailMessage reference), plus the fixed examples; the file takes
well under 30 s.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from batchmail.addresses import wire_addr_spec
from batchmail.campaign import Campaign, MessageConfig, RecipientsConfig, SendConfig, SmtpConfig
from batchmail.compose import Composer
from batchmail.errors import CampaignError
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import Recipient
from batchmail.render import Renderer

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
PDF = b"%PDF-1.4 shared attachment\x00\xff"
SENDER = "sender@example.com"
PARTS = ["multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/pdf"]
BENIGN = {
    "from_name": "Team",
    "name": "Ann",
    "email": "ann@example.com",
    "cc_name": "Ed",
    "cc": "",
    "bcc": "",
    "reply": "",
    "subject": "Hello",
    "note": "",
    "body": "Body",
}
LINE_ENDS_AND_CONTROLS = ["\r\n", "\n", "\r", "\x85", "\u2028", "\u2029", "\x00", "\x0b", "\x1b"]
HOSTILE_PIECES = [
    *["=?utf-8?q?", "?=", "=?utf-8?b?", "=0D=0A", "=2C", "_", "=?us-ascii?q?a?=", "\t"],
    *['"', "'", ",", ";", "<", ">", "\\", "@", ":", "(", ")", "[", "]", ".", "=", "--"],
    *["Bcc: evil@x.com", "evil@x.com", "<evil@x.com>", "x" * 100, "w" * 1200, "ü" * 300, " ", "  "],
    *["é", "Zoë", "张伟", "🎉", "\ufeff", "\u200b", "\u00a0", "\U000f002c"],
]
# Mostly printable, so that many rows are sent and checked; a control character or a
# line end in one value of eight.
printable = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_PIECES),
        st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=8),
    ),
    max_size=12,
).map("".join)


@st.composite
def hostile(draw: st.DrawFn) -> str:
    value = draw(printable)
    if draw(st.integers(0, 7)) == 0:
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(LINE_ENDS_AND_CONTROLS)) + value[at:]
    return value


emails = st.sampled_from(["ann@example.com", "zoë@example.com", "ann@bücher.de", "A.B@x.org"])


@st.composite
def rows(draw: st.DrawFn) -> dict[str, str]:
    """The benign row with its text fields hostile half of the time each, and one value in
    an address position (email, cc, bcc, reply) hostile a quarter of the time."""
    fields = dict(BENIGN)
    fields["email"] = draw(emails)
    for field in ("from_name", "name", "cc_name", "subject", "note", "body"):
        if draw(st.booleans()):
            fields[field] = draw(hostile())
    if draw(st.integers(0, 3)) == 0:
        fields[draw(st.sampled_from(["email", "cc", "bcc", "reply"]))] = draw(hostile())
    return fields


@pytest.fixture(scope="module")
def composers(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Renderer, Composer]]:
    directory = tmp_path_factory.mktemp("injection")
    (directory / "body.txt.j2").write_text("Hello {{ name }},\n{{ body }}\n", encoding="utf-8")
    (directory / "body.html.j2").write_text("<p>{{ body }}</p>\n", encoding="utf-8")
    (directory / "guide.pdf").write_bytes(PDF)
    campaign = Campaign(
        path=directory / "campaign.yaml",
        name="injection",
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(directory / "people.csv"),
        message=MessageConfig(
            from_="{{ from_name }} <" + SENDER + ">",
            to="{{ name }} <{{ email }}>",
            cc='"{{ cc_name }}" <cc@example.org>{% if cc %}, {{ cc }}{% endif %}',
            bcc="{{ bcc }}",
            reply_to="{{ reply }}",
            subject="Re: {{ subject }}",
            text=directory / "body.txt.j2",
            html=directory / "body.html.j2",
            attachments=("guide.pdf",),
            headers=(("X-Note", "{{ note }}"),),
        ),
        send=SendConfig(),
    )
    renderer = Renderer.compile(campaign)
    return {
        fast: (renderer, Composer.prepare(campaign, renderer, fast=fast)) for fast in (True, False)
    }


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=rows())
def test_hostile_values_are_refused_or_sent_exactly_as_meant(
    composers: dict[bool, tuple[Renderer, Composer]], fast: bool, fields: dict[str, str]
) -> None:
    check_row(composers[fast], fields)


CVE_TRIGGERS = [
    # CVE-2024-6923: an encoded word holding CRLF, in a header long enough to be folded.
    {"subject": "=?utf-8?q?a=0D=0ABcc:_x@evil.com?= " + "x" * 80},
    {"note": "=?utf-8?q?a=0D=0ABcc:_x@evil.com?= " + "y" * 80},
    {"name": "=?utf-8?q?a=0D=0ABcc:_x@evil.com?="},
    # CVE-2025-1795: encoded commas in long non-ASCII display names.
    {"cc_name": "Zoë, Team " * 6},
    {"name": "Ünïcödé " * 3 + "a,b@evil.com"},
    {"name": "=?utf-8?q?bob=40evil.com=2C_x?="},
    # CVE-2023-27043: what parseaddr/getaddresses would misread.
    {"email": "alice@example.org)<bob@example.org>"},
    {"email": '"a@b.com" <evil@x.com>'},
    {"cc": "a@x.org, b@y.org"},
    {"bcc": "a@x.org; b@y.org"},
    {"reply": "Eve <eve@x.org>, bob@y.org"},
    # Header injection through line ends of every kind.
    {"name": "Mallory\r\nBcc: victim@example.com"},
    {"subject": "hi\nBcc: victim@example.com"},
    {"note": "x\u2028Bcc: victim@example.com"},
    {"from_name": "x\x85Bcc: victim@example.com"},
    # Display names the email package folds badly.
    {"subject": "Grüße  " * 20},
    {"cc_name": "Dr. Zoë Ann Müller-Lüdenscheidt von Oberhausen, " * 2},
    # Structure in a display name is text.
    {"name": 'x" <evil@evil.com>, "y'},
    {"cc_name": 'Ed" <evil@evil.com>, "x'},
    {"from_name": "Doe, John; (boss) [x]: \\"},
    # A body trying to end the message, forge a boundary or a part.
    {"body": "\r\n.\r\nMAIL FROM:<x@y>\r\n--bm-0000\r\nContent-Type: text/plain\r\n\r\nforged"},
    {"body": "x" * 2000 + "\n=\n.\n tail \t\n"},
    {"email": "zoë@example.com", "name": "Zoë, Müller"},
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("change", CVE_TRIGGERS)
def test_known_triggers_are_refused_or_sent_exactly_as_meant(
    composers: dict[bool, tuple[Renderer, Composer]], fast: bool, change: dict[str, str]
) -> None:
    check_row(composers[fast], {**BENIGN, **change})


def test_the_triggers_that_must_be_refused_are(
    composers: dict[bool, tuple[Renderer, Composer]],
) -> None:
    refused = {
        "subject": "=?utf-8?q?a=0D=0ABcc:_x@evil.com?= " + "x" * 80,
        "cc": "a@x.org, b@y.org",
        "email": "alice@example.org)<bob@example.org>",
        "name": "Mallory\r\nBcc: victim@example.com",
    }
    renderer, composer = composers[True]
    for field, value in refused.items():
        with pytest.raises(CampaignError):
            compose(renderer, composer, {**BENIGN, field: value})


# --- the oracle ---------------------------------------------------------------------------


def compose(renderer: Renderer, composer: Composer, fields: dict[str, str]) -> ComposedMessage:
    recipient = Recipient(7, "key", fields)
    return composer.compose(recipient, renderer.render(recipient), date=DATE)


def check_row(pair: tuple[Renderer, Composer], fields: dict[str, str]) -> None:
    renderer, composer = pair
    try:
        composed = compose(renderer, composer, fields)
    except CampaignError as exc:
        for problem in exc.problems:  # refused, naming the row and the field
            assert re.match(r"people\.csv, row 7, message\.[\w.-]+$", problem.where), problem
            assert problem.message.strip()
        return
    expected = intended(fields)
    message = read(composed.data)
    assert [name for name, _ in expected] + ["Content-Type"] == list(message.keys())
    assert strict_header_names(composed.data) == list(message.keys())
    for name, value in expected:
        header = message[name]
        if isinstance(value, list):
            assert [(a.display_name, a.addr_spec) for a in header.addresses] == value, name
        elif value is None:
            assert str(header) == composed.message_id
        else:
            assert str(header) == value, name
    recipients = [spec for name, value in expected if name in ("To", "Cc") for _, spec in value]
    recipients += [wire_addr_spec(fields["bcc"].strip(" \t"))] if fields["bcc"].strip(" \t") else []
    assert composed.envelope.mail_from == SENDER
    assert list(composed.envelope.rcpt_tos) == list(dict.fromkeys(recipients))
    assert [part.get_content_type() for part in message.walk()] == PARTS
    _, _, text, html, pdf = message.walk()
    assert lines(text.get_content()) == lines(f"Hello {fields['name']},\n{fields['body']}\n")
    assert lines(html.get_content()) == lines(f"<p>{escape(fields['body'])}</p>\n")
    assert (pdf.get_content(), pdf.get_filename()) == (PDF, "guide.pdf")


def intended(fields: dict[str, str]) -> list[tuple[str, Any]]:
    """The headers the template's author wrote, filled with the row's values as text."""
    cc = [(fields["cc_name"], "cc@example.org")]
    if fields["cc"]:
        cc.append(("", wire_addr_spec(fields["cc"].strip(" \t"))))
    headers: list[tuple[str, Any]] = [
        ("From", [(fields["from_name"].strip(" \t"), SENDER)]),
        ("To", [(fields["name"].strip(" \t"), wire_addr_spec(fields["email"].strip(" \t")))]),
        ("Cc", cc),
    ]
    if fields["reply"].strip(" \t"):
        headers.append(("Reply-To", [("", fields["reply"].strip(" \t"))]))
    headers += [
        ("Subject", f"Re: {fields['subject']}".strip(" \t")),
        ("Date", "Mon, 06 May 2024 07:08:09 +0000"),
        ("Message-ID", None),  # derived from the key: compared with the composed one
        ("MIME-Version", "1.0"),
    ]
    if fields["note"].strip(" \t"):
        headers.append(("X-Note", fields["note"].strip(" \t")))
    return headers


def read(data: bytes) -> EmailMessage:
    """The message as a receiving Python reads it: RFC 6532 text when it is UTF-8."""
    if data.isascii():
        message = email.message_from_bytes(data, policy=email.policy.default)
    else:
        message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def strict_header_names(data: bytes) -> list[str]:
    block = data.split(b"\r\n\r\n", 1)[0]
    fields = re.split(rb"\r\n(?![ \t])", block)
    for field in fields:
        unfolded = field.replace(b"\r\n", b"")
        assert b"\r" not in unfolded and b"\n" not in unfolded
    return [field.split(b":", 1)[0].decode("ascii") for field in fields]


def lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
