"""Composing messages from real templates and files, checked by parsing the bytes back."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from batchmail.campaign import Campaign, MessageConfig, RecipientsConfig, SendConfig, SmtpConfig
from batchmail.compose import Composer
from batchmail.errors import CampaignError
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import Recipient
from batchmail.render import Renderer

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
PDF = b"%PDF-1.4\n\x00\xff binary \r\n bytes\n"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """The campaign's directory, with its templates; tmp_path itself is "outside"."""
    directory = tmp_path / "campaign"
    directory.mkdir()
    (directory / "welcome.txt.j2").write_text("Hello {{ name }},\n{{ note }}\n", encoding="utf-8")
    (directory / "welcome.html.j2").write_text("<p>Hello {{ name }}, {{ note }}</p>\n", "utf-8")
    return directory


def make_campaign(
    directory: Path, text: bool = True, html: bool = True, name: str = "welcome", **message: Any
) -> Campaign:
    fields: dict[str, Any] = {
        "from_": '"Zoë, Team" <team@example.com>',
        "to": '"{{ name }}" <{{ email }}>',
        "subject": "Grüße, {{ name }}",
        "text": directory / "welcome.txt.j2" if text else None,
        "html": directory / "welcome.html.j2" if html else None,
    }
    fields.update(message)
    return Campaign(
        path=directory / "welcome.yaml",
        name=name,
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(directory / "welcome.csv"),
        message=MessageConfig(**fields),
        send=SendConfig(),
    )


def row(row_number: int = 1, **fields: str) -> Recipient:
    values = {"email": "ann@example.com", "name": "Ann", "note": "see you"}
    values.update(fields)
    return Recipient(row_number, values["email"], values)


def compose(campaign: Campaign, recipient: Recipient) -> ComposedMessage:
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)
    return composer.compose(recipient, renderer.render(recipient), date=DATE)


def parse(composed: ComposedMessage) -> EmailMessage:
    message = email.message_from_bytes(composed.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(part: EmailMessage) -> str:
    """A text part's content with the wire's CRLF line ends read back as "\\n"."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def problems(campaign: Campaign, recipient: Recipient) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        compose(campaign, recipient)
    return [str(problem) for problem in caught.value.problems]


# --- headers and bodies ---------------------------------------------------------------------


def test_headers_round_trip(directory: Path) -> None:
    campaign = make_campaign(
        directory,
        cc="Ed <ed@example.com>",
        reply_to="Help Desk <help@example.com>",
        headers=(("X-Campaign", "spring {{ name }}"), ("List-Unsubscribe", "<mailto:u@ex.com>")),
    )
    composed = compose(campaign, row(name="张伟 Zoë"))
    message = parse(composed)
    (sender,) = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Zoë, Team", "team@example.com")
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("张伟 Zoë", "ann@example.com")
    assert message["Cc"].addresses[0].addr_spec == "ed@example.com"
    assert message["Reply-To"].addresses[0].display_name == "Help Desk"
    assert message["Subject"] == "Grüße, 张伟 Zoë"
    assert message["Date"].datetime == DATE
    assert message["MIME-Version"] == "1.0"
    assert message["X-Campaign"] == "spring 张伟 Zoë"
    assert message["List-Unsubscribe"] == "<mailto:u@ex.com>"
    assert message["Message-ID"] == composed.message_id
    assert (composed.row_number, composed.key) == (1, "ann@example.com")
    # Non-ASCII went out as encoded words, not raw UTF-8.
    assert b"=?utf-8?" in composed.data and composed.data.isascii()


def test_text_and_html_make_an_alternative_with_text_first(directory: Path) -> None:
    message = parse(compose(make_campaign(directory), row(note="<b>bold</b> & more")))
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert text_of(text) == "Hello Ann,\n<b>bold</b> & more\n"
    assert html.get_content_type() == "text/html"
    assert text_of(html) == "<p>Hello Ann, &lt;b&gt;bold&lt;/b&gt; &amp; more</p>\n"


def test_text_only_and_html_only(directory: Path) -> None:
    text = parse(compose(make_campaign(directory, html=False), row()))
    assert text.get_content_type() == "text/plain"
    assert text_of(text) == "Hello Ann,\nsee you\n"
    # html only: the text part is made from the HTML (see tests/test_bodies.py)
    derived, html = parse(compose(make_campaign(directory, text=False), row())).iter_parts()
    assert derived.get_content_type() == "text/plain"
    assert text_of(derived) == "Hello Ann, see you\n"
    assert html.get_content_type() == "text/html"
    assert text_of(html) == "<p>Hello Ann, see you</p>\n"


def test_non_ascii_bodies_are_utf8_and_seven_bit(directory: Path) -> None:
    composed = compose(make_campaign(directory), row(name="Zoë 张伟"))
    assert composed.data.isascii()
    text, html = parse(composed).iter_parts()
    assert text.get_content_charset() == "utf-8"
    assert text["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert text_of(text) == "Hello Zoë 张伟,\nsee you\n"
    assert text_of(html) == "<p>Hello Zoë 张伟, see you</p>\n"


def test_crlf_only_and_no_line_over_998_octets(directory: Path) -> None:
    long_line = "x" * 4000  # the longest subject batchmail writes
    campaign = make_campaign(directory, subject="{{ note }}")
    composed = compose(campaign, row(note=long_line))
    assert b"\n" not in composed.data.replace(b"\r\n", b"")
    assert b"\r" not in composed.data.replace(b"\r\n", b"")
    assert max(len(line) for line in composed.data.split(b"\r\n")) <= 998
    message = parse(composed)
    assert message["Subject"] == long_line
    text, _ = message.iter_parts()
    assert text_of(text) == f"Hello Ann,\n{long_line}\n"


def test_bcc_is_in_the_envelope_only(directory: Path) -> None:
    campaign = make_campaign(
        directory,
        cc="ed@example.com; Ann Again <ann@EXAMPLE.com>",
        bcc="audit@example.com, ed@example.com",
    )
    composed = compose(campaign, row())
    assert b"bcc" not in composed.data.lower()
    assert b"audit@example.com" not in composed.data
    assert parse(composed)["Bcc"] is None
    assert composed.envelope.mail_from == "team@example.com"
    assert composed.envelope.rcpt_tos == ("ann@example.com", "ed@example.com", "audit@example.com")


def test_bcc_alone_is_enough(directory: Path) -> None:
    composed = compose(make_campaign(directory, to="", bcc="{{ email }}"), row())
    assert composed.envelope.rcpt_tos == ("ann@example.com",)
    assert parse(composed)["To"] is None


def test_internationalised_domains_go_out_in_idna_form(directory: Path) -> None:
    campaign = make_campaign(directory, from_="Zoë <zoe@bücher.de>")
    composed = compose(campaign, row(email="ann@münchen.example.com"))
    assert composed.envelope.mail_from == "zoe@xn--bcher-kva.de"
    assert composed.envelope.rcpt_tos == ("ann@xn--mnchen-3ya.example.com",)
    assert composed.message_id.endswith(".batchmail@xn--bcher-kva.de>")
    assert parse(composed)["From"].addresses[0].addr_spec == "zoe@xn--bcher-kva.de"


def test_message_id_is_stable_per_key_and_unique_across_keys(directory: Path) -> None:
    first = compose(make_campaign(directory), row())
    again = compose(make_campaign(directory), row(name="Changed"))
    other = compose(make_campaign(directory), row(email="bob@example.com"))
    renamed = compose(make_campaign(directory, name="autumn"), row())
    assert first.message_id == again.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith(".batchmail@example.com>")
    assert len({first.message_id, other.message_id, renamed.message_id}) == 3


def test_compose_is_deterministic(directory: Path) -> None:
    (directory / "guide.pdf").write_bytes(PDF)
    campaign = make_campaign(directory, attachments=("guide.pdf",))
    assert compose(campaign, row()).data == compose(campaign, row()).data


def test_a_body_cannot_forge_a_mime_boundary(directory: Path) -> None:
    (directory / "guide.pdf").write_bytes(PDF)
    campaign = make_campaign(directory, attachments=("guide.pdf",))
    honest = parse(compose(campaign, row()))
    boundaries = [part.get_boundary() for part in honest.walk() if part.is_multipart()]
    forged = "\n".join(f"--{b}--\nContent-Type: text/plain\n\nforged" for b in boundaries)
    message = parse(compose(campaign, row(note=forged)))
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    body = next(message.iter_parts()).get_body(("plain",))
    assert body is not None and forged in text_of(body)


# --- attachments ----------------------------------------------------------------------------


def test_attachments_are_byte_identical_with_names_and_types(
    directory: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "guide.pdf").write_bytes(PDF)
    (directory / "invoices").mkdir()
    (directory / "invoices" / "Rechnung für Zoë.pdf").write_bytes(b"invoice bytes")
    (directory / "invoices" / "data.weird").write_bytes(b"\x01\x02")
    campaign = make_campaign(
        directory, attachments=("../shared/guide.pdf", "invoices/{{ invoice }}", "{{ extra }}")
    )
    recipient = row(invoice="Rechnung für Zoë.pdf", extra="invoices/data.weird")
    message = parse(compose(campaign, recipient))
    assert message.get_content_type() == "multipart/mixed"
    body, *attachments = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    found = [(a.get_filename(), a.get_content_type(), a.get_content()) for a in attachments]
    assert found == [
        ("guide.pdf", "application/pdf", PDF),
        ("Rechnung für Zoë.pdf", "application/pdf", b"invoice bytes"),
        ("data.weird", "application/octet-stream", b"\x01\x02"),
    ]
    assert all(a.get_content_disposition() == "attachment" for a in attachments)


def test_attachment_with_html_only(directory: Path) -> None:
    (directory / "notes.txt").write_bytes(b"line\r\nline\n")
    message = parse(
        compose(make_campaign(directory, text=False, attachments=("notes.txt",)), row())
    )
    bodies, notes = message.iter_parts()
    assert bodies.get_content_type() == "multipart/alternative"  # with a text part made
    assert [p.get_content_type() for p in bodies.iter_parts()] == ["text/plain", "text/html"]
    assert notes.get_content_type() == "text/plain"
    assert notes.get_payload(decode=True) == b"line\r\nline\n"


def test_a_static_attachment_is_read_once_per_run(directory: Path) -> None:
    guide = directory / "guide.pdf"
    guide.write_bytes(PDF)
    campaign = make_campaign(directory, attachments=("guide.pdf",))
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)
    first = composer.compose(row(), renderer.render(row()), date=DATE)
    guide.write_bytes(b"replaced on disk")
    second_row = row(2, email="bob@example.com")
    second = composer.compose(second_row, renderer.render(second_row), date=DATE)
    for composed in (first, second):
        *_, attachment = parse(composed).iter_parts()
        assert attachment.get_content() == PDF


def test_a_templated_attachment_is_read_for_each_row(directory: Path) -> None:
    (directory / "a.pdf").write_bytes(b"A")
    campaign = make_campaign(directory, attachments=("{{ file }}",))
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)
    recipient = row(file="a.pdf")
    first = composer.compose(recipient, renderer.render(recipient), date=DATE)
    (directory / "a.pdf").write_bytes(b"B")
    second = composer.compose(recipient, renderer.render(recipient), date=DATE)
    contents = [list(parse(c).iter_parts())[-1].get_content() for c in (first, second)]
    assert contents == [b"A", b"B"]


def test_a_missing_static_attachment_is_refused_before_any_row(directory: Path) -> None:
    campaign = make_campaign(directory, attachments=("files/guide.pdf",))
    with pytest.raises(CampaignError) as caught:
        Composer.prepare(campaign, Renderer.compile(campaign))
    assert str(caught.value) == (
        "welcome.yaml, message.attachments[0]: files/guide.pdf: "
        f"file not found: {directory / 'files/guide.pdf'}"
    )


def test_a_missing_templated_attachment_names_row_index_and_path(directory: Path) -> None:
    campaign = make_campaign(directory, attachments=("invoices/{{ code }}.pdf",))
    assert problems(campaign, row(9, code="A7")) == [
        "welcome.csv, row 9, message.attachments[0]: "
        "invoices/{{ code }}.pdf (column code): "
        f"file not found: {directory / 'invoices/A7.pdf'}"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("../../etc/passwd", "'../../etc/passwd' leaves the campaign's directory"),
        ("../secret.txt", "'../secret.txt' leaves the campaign's directory"),
        ("/etc/passwd", "renders to the absolute path '/etc/passwd'; it must be relative"),
        ("", "renders to an empty path"),
        ("  ", "renders to an empty path"),
        ("a\nb", "line break (U+000A)"),
    ],
)
def test_templated_attachment_paths_are_confined(
    directory: Path, tmp_path: Path, value: str, message: str
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    campaign = make_campaign(directory, attachments=("{{ file }}",))
    (problem,) = problems(campaign, row(4, file=value))
    assert problem.startswith(
        "welcome.csv, row 4, message.attachments[0]: {{ file }} (column file): "
    )
    assert message in problem


def test_a_symlink_cannot_lead_out_of_the_campaign_directory(
    directory: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    (directory / "innocent.pdf").symlink_to(tmp_path / "secret.txt")
    campaign = make_campaign(directory, attachments=("{{ file }}",))
    (problem,) = problems(campaign, row(file="innocent.pdf"))
    assert "'innocent.pdf' leaves the campaign's directory" in problem


def test_a_literal_prefix_names_the_directory_a_template_may_pick_from(
    directory: Path, tmp_path: Path
) -> None:
    invoices = tmp_path / "invoices"
    invoices.mkdir()
    (invoices / "A1.pdf").write_bytes(b"A1")
    (tmp_path / "secret.pdf").write_bytes(b"secret")
    campaign = make_campaign(directory, attachments=("../invoices/{{ id }}.pdf",))
    message = parse(compose(campaign, row(id="A1")))
    assert list(message.iter_parts())[-1].get_content() == b"A1"
    (problem,) = problems(campaign, row(id="../secret"))
    assert f"leaves the directory {invoices}/" in problem


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "fields", "expected"),
    [
        (
            "{{ email }}",
            {"email": "a@b.com>, evil@x.com"},
            '"a@b.com>, evil@x.com" is not one email address: a value filled in from the CSV',
        ),
        ("{{ email }}", {"email": "a@b@c.com"}, '"a@b@c.com" is not a valid email address'),
        ("{{ email }}", {"email": "ann@"}, '"ann@" is not a valid email address'),
        (
            '"{{ name }}" <{{ email }}>',
            {"name": "Ann\r\nBcc: x@evil.com"},
            "the To value '\"Ann\\r\\nBcc: x@evil.com\" <ann@example.com>' contains a line break",
        ),
        (
            "{{ name }} <{{ email }}>",
            {"name": "=?utf-8?q?bob=40evil.com?="},
            '"=?utf-8?q?bob=40evil.com?= <ann@example.com>" contains "=?"',
        ),
        ("{{ email }}", {"email": "a@x.org, b@y.org"}, '"a@x.org, b@y.org" is not one email'),
        ("{{ email }}", {"email": "a@x.org; b@y.org"}, '"a@x.org; b@y.org" is not one email'),
        ("{{ email }}", {"email": "Eve <e@x.org>"}, '"Eve <e@x.org>" is not one email'),
        (
            "{{ email }}",
            {"email": "a@b.com\U000f002c"},
            "'a@b.com\\U000f002c' contains the private-use character U+F002C",
        ),
    ],
)
def test_bad_recipients_are_refused_with_row_and_field(
    directory: Path, to: str, fields: dict[str, str], expected: str
) -> None:
    campaign = make_campaign(directory, to=to, subject="Hello")
    (problem,) = problems(campaign, row(42, **fields))
    assert problem.startswith(f"welcome.csv, row 42, message.to: {expected}")


def test_header_injection_through_the_subject_is_refused(directory: Path) -> None:
    campaign = make_campaign(directory, to="{{ email }}", subject="Hi {{ name }}")
    (problem,) = problems(campaign, row(3, name="Ann\r\nBcc: x@evil.com"))
    assert problem.startswith("welcome.csv, row 3, message.subject: the Subject value")
    assert "line break (U+000D)" in problem


@pytest.mark.parametrize("field", ["subject", "header"])
def test_encoded_words_that_would_decode_into_headers_are_refused(
    directory: Path, field: str
) -> None:
    # Python 3.11's email package decodes this to "a\r\nBcc: x@evil" when storing it.
    smuggled = "=?utf-8?q?a=0D=0ABcc:_x@evil.com?="
    if field == "subject":
        campaign = make_campaign(directory, to="{{ email }}", subject="{{ name }}")
        where = "message.subject"
    else:
        campaign = make_campaign(
            directory, to="{{ email }}", subject="Hi", headers=(("X-Tag", "{{ name }}"),)
        )
        where = "message.headers.X-Tag"
    (problem,) = problems(campaign, row(5, name=smuggled))
    assert problem.startswith(f"welcome.csv, row 5, {where}: ")
    assert "encoded word" in problem


def test_from_needs_exactly_one_address(directory: Path) -> None:
    two = make_campaign(directory, from_="a@example.com, b@example.com")
    assert problems(two, row(2)) == [
        "welcome.csv, row 2, message.from: needs exactly one address, "
        "found 2 in 'a@example.com, b@example.com'"
    ]
    none = make_campaign(directory, from_="{{ note }}")
    (problem,) = problems(none, row(2, note=""))
    assert problem.startswith("welcome.csv, row 2, message.from: needs exactly one address")


def test_a_row_without_any_recipient_is_refused(directory: Path) -> None:
    campaign = make_campaign(directory, to="{{ email }}", cc="", bcc="")
    assert problems(campaign, row(8, email="")) == [
        "welcome.csv, row 8, message.to: no recipient: to, cc and bcc are all empty"
    ]


def test_every_problem_of_a_row_is_reported(directory: Path) -> None:
    campaign = make_campaign(
        directory,
        cc="{{ note }}",
        reply_to="{{ note }}",
        subject="{{ note }}",
        headers=(("X-Note", "{{ note }}"),),
        attachments=("{{ note }}",),
    )
    found = problems(campaign, row(6, note="x\x00y"))
    assert [p.split(":")[0] for p in found] == [
        "welcome.csv, row 6, message.cc",
        "welcome.csv, row 6, message.reply_to",
        "welcome.csv, row 6, message.subject",
        "welcome.csv, row 6, message.headers.X-Note",
        "welcome.csv, row 6, message.attachments[0]",
    ]


def test_a_sender_header_is_parsed_strictly(directory: Path) -> None:
    campaign = make_campaign(directory, headers=(("Sender", "Office <{{ note }}>"),))
    message = parse(compose(campaign, row(note="office@bücher.de")))
    assert message["Sender"].addresses[0].addr_spec == "office@xn--bcher-kva.de"
    (problem,) = problems(campaign, row(note="a@b.com>, x@y.com"))
    assert problem.startswith("welcome.csv, row 1, message.headers.Sender: ")
    assert "cannot add addresses" in problem


def test_address_list_lets_the_author_take_a_whole_list_from_a_column(directory: Path) -> None:
    campaign = make_campaign(directory, cc="{{ note | address_list }}")
    composed = compose(campaign, row(note='"Lee, Ed" <ed@example.com>; fay@example.com'))
    cc = [(a.display_name, a.addr_spec) for a in parse(composed)["Cc"].addresses]
    assert cc == [("Lee, Ed", "ed@example.com"), ("", "fay@example.com")]
    assert composed.envelope.rcpt_tos == ("ann@example.com", "ed@example.com", "fay@example.com")


@pytest.mark.parametrize("to", ["{{ name }} <{{ email }}>", '"{{ name }}" <{{ email }}>'])
@pytest.mark.parametrize(
    "name", ["Doe, John", 'Eve" <eve@evil.com>, "x', "a; b@evil.com", "Dr. (Who) [x]: @ \\ y"]
)
def test_a_csv_value_in_a_display_name_is_only_ever_text(
    directory: Path, to: str, name: str
) -> None:
    composed = compose(make_campaign(directory, to=to, subject="Hi"), row(name=name))
    (address,) = parse(composed)["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ann@example.com")
    assert composed.envelope.rcpt_tos == ("ann@example.com",)


def test_an_empty_extra_header_is_left_out(directory: Path) -> None:
    campaign = make_campaign(directory, headers=(("X-Tag", "{{ note }}"),))
    assert parse(compose(campaign, row(note="")))["X-Tag"] is None


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "bcc",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Resent-To",
        "Orig-Date",
    ],
)
def test_extra_headers_cannot_override_structural_ones(directory: Path, name: str) -> None:
    campaign = make_campaign(directory, headers=((name, "x"),))
    with pytest.raises(CampaignError) as caught:
        Composer.prepare(campaign, Renderer.compile(campaign))
    (problem,) = caught.value.problems
    assert problem.where == f"welcome.yaml, message.headers.{name}"
    assert f"batchmail writes the {name} header itself" in problem.message


def test_extra_headers_are_checked_before_any_row(directory: Path) -> None:
    campaign = make_campaign(directory, headers=(("X-Tag", "a"), ("x-tag", "b"), ("Bad Name", "c")))
    with pytest.raises(CampaignError) as caught:
        Composer.prepare(campaign, Renderer.compile(campaign))
    assert [p.message for p in caught.value.problems] == [
        "the x-tag header is given twice",
        "header name 'Bad Name' contains ' ': "
        "only printable ASCII without spaces or ':' is allowed",
    ]


def test_quotes_and_backslashes_in_names_round_trip(directory: Path) -> None:
    # Written by the template's author, the quotes and backslashes are syntax ...
    campaign = make_campaign(directory, to='"Ann \\"AL\\" Lee \\\\ Co" <{{ email }}>', subject="Hi")
    (to,) = parse(compose(campaign, row()))["To"].addresses
    assert (to.display_name, to.addr_spec) == ('Ann "AL" Lee \\ Co', "ann@example.com")
    # ... coming from the CSV, they are text.
    campaign = make_campaign(directory, to="{{ name }} <{{ email }}>", subject="Hi")
    (to,) = parse(compose(campaign, row(name='Ann "AL" Lee \\ Co')))["To"].addresses
    assert (to.display_name, to.addr_spec) == ('Ann "AL" Lee \\ Co', "ann@example.com")


def test_a_long_non_ascii_file_name_round_trips(directory: Path) -> None:
    name = "Jahresübersicht " * 12 + "张伟.pdf"
    (directory / name).write_bytes(b"x")
    composed = compose(make_campaign(directory, attachments=("{{ file }}",)), row(file=name))
    assert max(len(line) for line in composed.data.split(b"\r\n")) <= 998
    assert list(parse(composed).iter_parts())[-1].get_filename() == name
