"""batchmail's own RFC 2047 encoded words: any text in Subject and display names reaches
readers exactly, as Python's email package (policy.default) reads it and as a second,
independent reader does (tests/rfc2047_reader.py, which says why it is not the email
package's legacy decoder), with words of at most 75 characters on lines of at most 78."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
import rfc2047_reader as reader
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchmail.addresses import Address
from batchmail.campaign import Campaign, MessageConfig, RecipientsConfig, SendConfig, SmtpConfig
from batchmail.compose import Composer
from batchmail.errors import CampaignError
from batchmail.recipients import Recipient
from batchmail.render import Renderer
from batchmail.rfc2047 import address_field, phrase_problem, unstructured_field

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

# Text as a CSV or template can hold it, from every plane. Left out: surrogates (not text:
# UTF-8 cannot carry them), control characters and the line and paragraph separators
# (refused by validation before any header is written: see test_injection.py).
any_char = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
combining = st.characters(whitelist_categories=("Mn", "Me", "Mc"))
clusters = st.sampled_from(
    ["👨‍👩‍👧", "🏳️‍🌈", "👍🏽", "🇩🇪", "🇵🇱🇹🇷", "👩🏿‍💻", "e\u0301", "ệ", "\u200d", "\ufe0f", "🎉"]
)
right_to_left = st.sampled_from(["مرحبا", "فاتورتك", "שלום", "\u200f", "\u202e", "،", "؟"])
look_alikes = st.sampled_from(["=?utf-8?q?", "?=", "=?", "_", "=", "=20", "=?utf-8?b?QQ==?="])
spaces = st.sampled_from([" ", "  ", "   ", "\u00a0", "\u3000", "\t"])
long_runs = st.sampled_from(["张" * 100, "x" * 120, "é" * 90, "🎉" * 40, "a" * 76, "Ж" * 22])
ascii_words = st.from_regex(r"[!-~]{1,12}", fullmatch=True)
pieces = st.one_of(
    st.text(any_char, min_size=1, max_size=8),
    combining,
    clusters,
    right_to_left,
    look_alikes,
    spaces,
    long_runs,
    ascii_words,
)
texts = st.lists(pieces, max_size=24).map("".join)


def read_by_python(field: bytes, name: str) -> email.message.EmailMessage:
    message = email.message_from_bytes(field + b"\r\n", policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert message.keys() == [name]
    return message


def encoded_words(field: bytes) -> list[str]:
    return [w for w in re.findall(r"\S+", field.decode()) if reader.ENCODED_WORD.search(w)]


def assert_well_formed(field: bytes, max_line: int = 78) -> None:
    assert field.endswith(b"\r\n") and field.isascii()
    assert all(len(line) <= max_line for line in field[:-2].split(b"\r\n")), field
    for word in encoded_words(field):
        assert reader.ENCODED_WORD.fullmatch(word.rstrip(",")), word  # whitespace-delimited
        assert len(word.rstrip(",")) <= 75, word
        reader.decode_word(word.rstrip(","))  # whole UTF-8 characters, valid Q or B


# --- unstructured text: Subject, extra headers ----------------------------------------------


@settings(max_examples=600, deadline=None)
@given(texts, st.sampled_from(["Subject", "X-Note", "Comments"]))
@example("Ihre Rechnung INV-1 über 79,19 € – Jürgen Müller 🎉", "Subject")
@example("Hello – Sam 🚀 Rocket", "Subject")
@example("  leading, trailing and  repeated  ", "Subject")
@example("=?utf-8?q?evil=40example.com?=", "X-Note")
@example("", "Subject")
def test_any_text_reads_back_exactly_in_both_readers(text: str, name: str) -> None:
    field = unstructured_field(name, text).encode("ascii")
    assert_well_formed(field)
    assert str(read_by_python(field, name)[name]) == text
    assert reader.unstructured(reader.unfold(field)[1]) == text


@pytest.mark.parametrize("unit", ["👨‍👩‍👧", "🏳️‍🌈", "👩🏿‍💻", "🇩🇪", "e\u0301\u0323", "ệ"])
def test_long_runs_are_split_between_grapheme_clusters(unit: str) -> None:
    text = unit * 60
    field = unstructured_field("Subject", text).encode("ascii")
    assert_well_formed(field)
    words = [reader.decode_word(word) for word in encoded_words(field)]
    assert len(words) > 1 and "".join(words) == text
    assert all(word == unit * (len(word) // len(unit)) for word in words[:-1])


def test_pure_ascii_text_stays_plain_and_is_folded_at_spaces() -> None:
    text = "Your invoice INV-2026-00042 of 1,234.56 EUR is ready, thanks for your order!"
    field = unstructured_field("Subject", text)
    assert "=?" not in field
    assert field == "Subject: " + text.replace("your order", "your\r\n order") + "\r\n"


# --- display names --------------------------------------------------------------------------

names = texts.map(lambda text: text.replace("\t", " "))  # a tab in a name is refused earlier


@settings(max_examples=600, deadline=None)
@given(names, names)
@example(".xxxx" * 30, "Doe, John")
@example(". " + "x " * 40, '"quoted" \\ back')
@example("Sam 🚀 Rocket", "  Ann  Lee  ")
@example("=?utf-8?q?bob=40evil.com?=", "张伟")
def test_any_display_name_reads_back_exactly_or_is_refused_for_a_reason(
    first: str, second: str
) -> None:
    addresses = (Address(first, "ann@example.org"), Address(second, "bob@example.org"))
    troubles = [phrase_problem(name) for name in (first, second)]
    if any(troubles):
        # Only non-ASCII text between ASCII words that needs more than one encoded word,
        # or holds repeated spaces, is refused: no encoding reads back alike everywhere.
        for name, trouble in zip((first, second), troubles, strict=True):
            assert trouble is None or not name.isascii() or "=?" in name or "?=" in name
        with pytest.raises(ValueError):
            address_field("To", addresses)
        return
    field = address_field("To", addresses).encode("ascii")
    assert_well_formed(field, max_line=998)  # a long ASCII word cannot be folded
    meant = [(a.display_name, a.addr_spec) for a in addresses]
    header = read_by_python(field, "To")["To"]
    assert [(a.display_name, a.addr_spec) for a in header.addresses] == meant
    assert not header.defects
    assert reader.address_list(reader.unfold(field)[1]) == meant


def test_names_of_every_script_fit_one_word_each() -> None:
    for name in ["Jürgen Müller", "Małgorzata Wiśniewski", "Çağrı Yılmaz", "欧阳秀英",
                 "Александр Иванов", "محمد عبد الله", "Nguyễn Văn Cường", "佐藤さくら",
                 "Kai 👨‍👩‍👧 Smith-Jones", "Zoë 🏳️‍🌈 👩🏿‍💻 Dev"]:  # fmt: skip
        assert phrase_problem(name) is None, name
        field = address_field("To", (Address(name, "a@example.org"),)).encode("ascii")
        assert_well_formed(field)
        assert reader.address_list(reader.unfold(field)[1]) == [(name, "a@example.org")]


# --- through the composer: the bytes a row really gets --------------------------------------


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    directory = tmp_path_factory.mktemp("campaign")
    (directory / "body.txt.j2").write_text("Hi\n", encoding="utf-8")
    return Campaign(
        path=directory / "c.yaml",
        name="rfc2047",
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(directory / "people.csv"),
        message=MessageConfig(
            from_="Zoë's Team <team@example.com>",
            to='"{{ name }}" <{{ email }}>',
            subject="{{ subject }}",
            text=directory / "body.txt.j2",
            headers=(("X-Note", "Rechnung für {{ name }}"),),
        ),
        send=SendConfig(),
    )


@pytest.fixture(scope="module")
def composer(campaign: Campaign) -> tuple[Renderer, Composer]:
    renderer = Renderer.compile(campaign)
    return renderer, Composer.prepare(campaign, renderer)


def header_fields(data: bytes) -> dict[str, bytes]:
    block = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    fields = re.findall(rb"[^ \t\r\n][^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", block)
    return {field.split(b":", 1)[0].decode(): field for field in fields}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subject=texts, name=names, ascii_address=st.booleans())
@example(subject="Ihre Rechnung über 10 € – Jürgen 🎉", name="." + "x" * 100, ascii_address=True)
@example(subject="Hi", name=". " + "x " * 40, ascii_address=False)
def test_composed_rows_read_back_exactly_or_are_refused_before_writing(
    composer: tuple[Renderer, Composer], subject: str, name: str, ascii_address: bool
) -> None:
    renderer, built = composer
    address = "ann@example.org" if ascii_address else "zoë@example.org"  # SMTPUTF8
    recipient = Recipient(1, address, {"email": address, "name": name, "subject": subject})
    rendered = renderer.render(recipient)
    try:
        message = built.compose(recipient, rendered, date=DATE)
    except CampaignError as exc:
        for problem in exc.problems:  # validation, never the read-back safety net
            assert "would reach readers as" not in problem.message, problem
            assert "cannot read" not in problem.message, problem
        return
    data = b"".join(message.parts)
    fields = header_fields(data)
    text = data.decode("utf-8")
    parsed = email.message_from_string(text, policy=email.policy.default)
    meant_subject = rendered.subject.strip(" \t")
    assert str(parsed["Subject"]) == meant_subject
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [(name, address)]
    assert str(parsed["X-Note"]) == f"Rechnung für {name}".strip(" \t")
    assert reader.unstructured(reader.unfold(fields["Subject"])[1]) == meant_subject
    assert reader.address_list(reader.unfold(fields["To"])[1]) == [(name, address)]
    for field in fields.values():
        assert all(len(line) <= 998 for line in field.split(b"\r\n"))


def test_the_fast_and_reference_writers_agree_on_encoded_headers(
    campaign: Campaign, composer: tuple[Renderer, Composer]
) -> None:
    renderer, fast = composer
    assert fast.uses_fast_path
    reference = Composer.prepare(campaign, renderer, fast=False)
    for number, name in enumerate(["Jürgen Müller", ".xxx", "Sam 🚀 Rocket", "张伟" * 7], 1):
        values = {"email": "a@example.org", "name": name, "subject": f"– {name} 🎉 " * 5}
        recipient = Recipient(number, "a@example.org", values)
        rendered = renderer.render(recipient)
        one = fast.compose(recipient, rendered, date=DATE)
        other = reference.compose(recipient, rendered, date=DATE)
        assert b"".join(one.parts) == b"".join(other.parts)
