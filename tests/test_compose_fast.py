"""The fast path writes byte for byte what the email package writes.

``mime_fast`` and ``header_oneline`` are compared with ``mime_reference`` (EmailMessage
serialized by the generator) on generated input: a deterministic set of rows of every
message shape (text only, html only, both, with static and templated attachments) with
hostile names, subjects and bodies, hypothesis-generated messages, single headers and
single bodies. Also: a shared attachment is encoded once per run, not per row, and
memory does not grow with the number of rows.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime
from email.message import MIMEPart
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchmail import mime_fast
from batchmail.addresses import Address
from batchmail.attachments import AttachmentPart
from batchmail.campaign import (
    Campaign,
    MessageConfig,
    RecipientsConfig,
    SendConfig,
    SmtpConfig,
    UnsubscribeConfig,
)
from batchmail.compose import Composer
from batchmail.errors import CampaignError
from batchmail.header_oneline import one_line
from batchmail.headers import POLICY, Header, _fold
from batchmail.mime_reference import Content, reference_bytes
from batchmail.recipients import Recipient
from batchmail.render import Renderer
from batchmail.rfc2047 import address_field, unstructured_field
from batchmail.smtp_envelope import crlf_lines
from batchmail.wire import has_dot_lines

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
# Characters that exercise every branch: specials, quotes, encoded-word look-alikes,
# QP-significant characters, non-ASCII of 2, 3 and 4 UTF-8 bytes.
TRICKY = list("aZ09 .,;:<>@\"'()[]\\=?_-!#~\t") + list("éüßñ€张伟🎉\u00a0\u200b")
WORDS = ["Ann", "Zoë", "Müller", "张伟", "O'Brien", "Dr.", "Doe,", "=?", "?=", "x" * 90, "🎉"]


def test_this_interpreter_takes_the_fast_path() -> None:
    assert mime_fast.writes_like_reference()


# --- whole rows, through both composers -----------------------------------------------------


def shapes_campaign(directory: Path, text: bool, html: bool, attachments: bool) -> Campaign:
    (directory / "body.txt.j2").write_text("{{ text }}", encoding="utf-8")
    (directory / "body.html.j2").write_text("<p>{{ html }}</p>\n", encoding="utf-8")
    return Campaign(
        path=directory / "fast.yaml",
        name="fast",
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(directory / "fast.csv"),
        message=MessageConfig(
            from_="{{ sender }} <team@example.com>",
            to="{{ name }} <{{ email }}>",
            cc='"{{ cc }}" <cc@example.org>',
            reply_to="Help <help@example.com>",
            subject="{{ subject }}",
            text=directory / "body.txt.j2" if text else None,
            html=directory / "body.html.j2" if html else None,
            attachments=("guide.pdf", "files/{{ file }}") if attachments else (),
            headers=(
                ("X-Note", "{{ note }}"),
                ("X-Campaign", "spring"),
                ("Sender", "{{ sender }} <office@example.com>"),
            ),
        ),
        send=SendConfig(),
    )


def phrase(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    if kind < 0.5:
        return "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 40)))
    if kind < 0.6:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))  # long
    return rng.choice(["Ann Lee", "Zoë", "User Zoë 17", "Welcome, Ann!", "", " padded  "])


def body(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 14)):
        kind = rng.random()
        if kind < 0.15:
            line = "x" * rng.choice([77, 78, 79, 998, 999, 1500])  # the length limits
        elif kind < 0.3:
            line = rng.choice([".", ". dot", "From here", "a=b", "=", "end=", "tail  ", "tab\t"])
        elif kind < 0.45:
            line = "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 120)))
        elif kind < 0.55:
            line = "张伟" * rng.randint(1, 60)
        else:
            line = " ".join(rng.choice(WORDS[:7]) for _ in range(rng.randint(0, 12)))
        lines.append(line)
    newline = rng.choice(["\n", "\r\n", "\r"])
    return newline.join(lines) + rng.choice(["", newline])


def generated_rows(rng: random.Random, count: int) -> list[Recipient]:
    rows = []
    for number in range(1, count + 1):
        fields = {
            "email": rng.choice(["ann@example.com", "a.b-c@sub.example.org", "ann@bücher.de"]),
            "name": phrase(rng),
            "sender": rng.choice(["Team", "Zoë's Team", "The Team, Inc."]),
            "cc": phrase(rng),
            "subject": phrase(rng),
            "note": phrase(rng),
            "text": body(rng),
            "html": body(rng),
            "file": rng.choice(["a.pdf", "Übersicht für Zoë.pdf", "x" * 120 + ".txt"]),
        }
        rows.append(Recipient(number, f"key{number}", fields))
    return rows


@pytest.mark.parametrize(
    ("text", "html", "attachments"),
    [
        (True, False, False),
        (False, True, False),
        (True, True, False),
        (True, False, True),
        (False, True, True),
        (True, True, True),
    ],
)
def test_fast_and_reference_composers_agree_on_every_row(
    tmp_path: Path, text: bool, html: bool, attachments: bool
) -> None:
    (tmp_path / "guide.pdf").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "files").mkdir()
    for name in ("a.pdf", "Übersicht für Zoë.pdf", "x" * 120 + ".txt"):
        (tmp_path / "files" / name).write_bytes(b"%PDF " + name.encode())
    campaign = shapes_campaign(tmp_path, text, html, attachments)
    renderer = Renderer.compile(campaign)
    fast = Composer.prepare(campaign, renderer)
    reference = Composer.prepare(campaign, renderer, fast=False)
    assert fast.uses_fast_path and not reference.uses_fast_path
    composed = 0
    for recipient in generated_rows(random.Random(f"{text}{html}{attachments}"), 250):
        rendered = renderer.render(recipient)
        expected = outcome(reference, recipient, rendered)
        assert outcome(fast, recipient, rendered) == expected, recipient
        composed += isinstance(expected, bytes)
    assert composed > 100  # most rows are sendable: the comparison is not vacuous


def outcome(composer: Composer, recipient: Recipient, rendered: Any) -> bytes | list[str]:
    try:
        message = composer.compose(recipient, rendered, date=DATE)
    except CampaignError as exc:
        return [str(problem) for problem in exc.problems]
    # What the message says of its lines spares the transport a scan: it must be true.
    assert message.crlf_only
    assert crlf_lines(message.data) == message.data
    assert message.dot_lines == has_dot_lines(message.data), recipient
    return message.data


# --- whole messages, generated by hypothesis ------------------------------------------------

tricky_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=60)
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
bodies = st.one_of(
    st.none(),
    st.lists(st.sampled_from([*TRICKY, "\n", "\r", "\r\n", "x" * 80]), max_size=200).map("".join),
    st.lists(st.sampled_from(["x" * 999, "=", ".", " ", "张伟" * 50, "a\tb", ""])).map("\n".join),
)


def probe_attachment(name: str) -> AttachmentPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(
        b"\x00\x01 data", "application", "pdf", disposition="attachment", filename=name
    )
    return AttachmentPart(part, part.as_bytes(policy=POLICY))


@st.composite
def contents(draw: st.DrawFn) -> Content:
    names = st.one_of(tricky_text, words)
    to = draw(
        st.lists(st.tuples(names, st.sampled_from(["a@example.com", "b.c@x.org"])), max_size=3)
    )
    headers = [Header("From", (Address(draw(names), "team@example.com"),), "")]
    if to:
        headers.append(Header("To", tuple(Address(n, s) for n, s in to), ""))
    headers += [
        Header("Subject", draw(st.one_of(tricky_text, words)), ""),
        Header("Date", "Mon, 06 May 2024 07:08:09 +0000", ""),
        Header("Message-ID", "<0123abcd.batchmail@example.com>", ""),
        Header("MIME-Version", "1.0", ""),
        Header("X-Note", draw(st.one_of(tricky_text, words)), ""),
    ]
    text, html = draw(bodies), draw(bodies)
    if text is None and html is None:
        text = ""
    names_of_files = st.sampled_from(["a.pdf", "Übersicht.pdf", "x" * 100 + ".bin"])
    attachments = tuple(probe_attachment(n) for n in draw(st.lists(names_of_files, max_size=2)))
    return Content(tuple(headers), text, html, attachments, "<0123abcd.batchmail@example.com>")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents())
def test_fast_writer_equals_the_email_package(content: Content) -> None:
    try:
        expected = reference_bytes(content)
    except Exception as exc:  # noqa: BLE001 - whatever the email package refuses ...
        with pytest.raises(type(exc)):  # ... the fast path refuses the same way
            mime_fast.write(content)
        return
    assert mime_fast.write(content) == expected


# --- single headers and bodies --------------------------------------------------------------

header_names = st.sampled_from(["Subject", "X-Note", "Comments", "Message-ID", "Date"])


@settings(max_examples=1000, deadline=None)
@given(st.one_of(tricky_text, words), header_names)
@example("Welcome, User Zoë 17!", "Subject")
@example("<0123abcd.batchmail@example.com>", "Message-ID")
def test_one_line_headers_are_what_the_email_package_writes(value: str, name: str) -> None:
    line = one_line(name, value)
    if line is not None:
        assert line == _fold(name, value, False)
        if name not in ("Message-ID", "Date"):
            assert line == unstructured_field(name, value).encode("ascii")


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.one_of(tricky_text, words), st.sampled_from(["a@b.org", "Q@Z.IO"]))))
@example([("User Zoë 17", "a@b.org")])
@example([("Zoë", "a@b.org"), ("", "Q@Z.IO"), ("Müller", "a@b.org")])
def test_one_line_address_lists_are_what_the_email_package_writes(
    items: list[tuple[str, str]],
) -> None:
    value = tuple(Address(name, spec) for name, spec in items)
    line = one_line("To", value)
    if line is not None:
        assert line == _fold("To", value, False)
        assert line == address_field("To", value).encode("ascii")


def test_one_line_covers_the_common_cases() -> None:
    # If these stopped qualifying, the fast path would silently become slow.
    assert one_line("Subject", "Welcome, User Ann 17!") is not None
    assert one_line("To", (Address("Ann", "a@example.com"), Address("", "b@x.org"))) is not None
    assert (
        one_line("To", (Address("Ann Lee", "a@example.com"),)) == b"To: Ann Lee <a@example.com>\r\n"
    )
    assert (
        one_line("To", (Address("Lee, Ann", "a@example.com"),)) is None
    )  # quoted: written by rfc2047
    # Non-ASCII values are rfc2047's encoded words (see test_rfc2047.py).
    assert one_line("Subject", "Welcome, User Zoë 17!") is None


@settings(max_examples=400, deadline=None)
@given(bodies.filter(lambda text: text is not None))
@example("")
@example("trailing space \nand tab\t\n=\n.\n. leading dot\n")
@example("x" * 999 + "\n")
@example("Grüße\n" * 11)
def test_text_bodies_are_encoded_as_the_email_package_does(text: str) -> None:
    part = MIMEPart(policy=POLICY)
    part.set_content(text)
    cte, data = mime_fast.encode_text(text)
    assert cte == part["Content-Transfer-Encoding"]
    assert data == part.as_bytes(policy=POLICY).split(b"\r\n\r\n", 1)[1]


# --- the shared attachment is encoded once; memory stays flat -------------------------------


def test_a_shared_attachment_is_encoded_once_per_run_not_per_row(tmp_path: Path) -> None:
    (tmp_path / "guide.pdf").write_bytes(bytes(range(256)) * 1200)  # 300 KB
    campaign = shapes_campaign(tmp_path, text=True, html=False, attachments=False)
    campaign = replace(campaign, message=replace(campaign.message, attachments=("guide.pdf",)))
    renderer = Renderer.compile(campaign)
    encoding = EncodingCalls()
    with encoding:
        composer = Composer.prepare(campaign, renderer)
    assert encoding.calls > 0  # prepare() encodes it ...
    rows = generated_rows(random.Random(1), 20)
    encoding = EncodingCalls()
    with encoding:
        for recipient in rows:
            fields = {**recipient.fields, "text": "ASCII body, sent as 7bit\n"}
            recipient = Recipient(recipient.row_number, recipient.key, fields)
            try:
                composer.compose(recipient, renderer.render(recipient), date=DATE)
            except CampaignError:
                continue
    assert encoding.calls == 0  # ... and no row encodes or serializes it again


class EncodingCalls:
    """Counts calls, from Python or C, into base64 encoding and the email package's
    content manager and generator while active (sys.setprofile: nothing is replaced)."""

    def __init__(self) -> None:
        self.calls = 0

    def __enter__(self) -> EncodingCalls:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.setprofile(None)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") in ("b2a_base64", "encodebytes"):
            # A non-ASCII name in a header is a b-encoded word: that is not the attachment.
            self.calls += not _called_from(frame, "batchmail/rfc2047.py")
        elif event == "call":
            self.calls += frame.f_code.co_filename.endswith(
                ("email/contentmanager.py", "email/generator.py", "email/base64mime.py")
            )


def _called_from(frame: FrameType | None, filename: str) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.endswith(filename):
            return True
        frame = frame.f_back
    return False


def test_memory_does_not_grow_with_the_number_of_rows(tmp_path: Path) -> None:
    (tmp_path / "guide.pdf").write_bytes(bytes(range(256)) * 100)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.pdf").write_bytes(b"%PDF a")
    campaign = shapes_campaign(tmp_path, text=True, html=True, attachments=True)
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)

    def compose_rows(start: int, count: int) -> None:
        for number in range(start, start + count):
            fields = {
                "email": f"user{number}@example.com",
                "name": f"User Zoë {number}",
                "sender": "Team",
                "cc": f"Lee, Cc {number}",  # quoted: folded by the email package
                "subject": f"Welcome, User Zoë {number}!",
                "note": f"note {number}",
                "text": f"Hello Zoë {number},\nyour code is C{number}.\n" * 5,
                "html": f"Hello <b>{number}</b>\n",
                "file": "a.pdf",
            }
            recipient = Recipient(number, f"key{number}", fields)
            composer.compose(recipient, renderer.render(recipient), date=DATE)

    tracemalloc.start()
    try:
        # Fill the bounded caches (e.g. 256 parsed address lists) with entries that
        # tracemalloc sees, so that evicting them counts.
        compose_rows(1, 300)
        gc.collect()  # the email package makes a class per attachment header: cycles
        before = tracemalloc.get_traced_memory()[0]
        compose_rows(301, 600)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 32 * 1024, f"grew by {after - before} bytes over 600 rows"


# --- the shapes of the bodies and unsubscribe features ------------------------------------------


@pytest.mark.parametrize(
    ("body", "attachments"),
    [("markdown", False), ("markdown", True), ("html", False), ("html", True), ("both", True)],
)
def test_fast_and_reference_agree_on_related_images_and_list_unsubscribe(
    tmp_path: Path, body: str, attachments: bool
) -> None:
    """Inline images (multipart/related alone, in an alternative, in a mixed), a text part
    made from HTML or Markdown, inlined CSS and the List-Unsubscribe headers."""
    (tmp_path / "guide.pdf").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "files").mkdir()
    for name in ("a.pdf", "Übersicht für Zoë.pdf", "x" * 120 + ".txt"):
        (tmp_path / "files" / name).write_bytes(b"%PDF " + name.encode())
    (tmp_path / "logo.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 8)
    (tmp_path / "Übersicht.gif").write_bytes(b"GIF89a" + bytes(200))
    (tmp_path / "body.md.j2").write_text(
        "<style>p { color: red }</style>\n\n# {{ subject }}\n\n{{ text }}\n\n"
        "![Logo](logo.png) ![x](%C3%9Cbersicht.gif)\n\n[Leave]({{ unsubscribe_url }})\n",
        encoding="utf-8",
    )
    campaign = shapes_campaign(
        tmp_path, text=body == "both", html=body != "markdown", attachments=attachments
    )
    (tmp_path / "body.html.j2").write_text(
        '<style>p { color: red }</style><p>{{ html }}</p><img src="logo.png">\n'
        "<img src='Übersicht.gif'><a href=\"{{ unsubscribe_url }}\">leave</a>\n",
        encoding="utf-8",
    )
    message = replace(
        campaign.message,
        markdown=tmp_path / "body.md.j2" if body == "markdown" else None,
        unsubscribe=UnsubscribeConfig(
            "https://example.org/u/{{ row_number }}?n={{ name | urlencode }}", "unsub@example.org"
        ),
    )
    campaign = replace(campaign, message=message)
    renderer = Renderer.compile(campaign)
    fast = Composer.prepare(campaign, renderer)
    reference = Composer.prepare(campaign, renderer, fast=False)
    composed = 0
    for recipient in generated_rows(random.Random(f"{body}{attachments}"), 250):
        try:
            rendered = renderer.render(recipient)
        except CampaignError:
            continue
        expected = outcome(reference, recipient, rendered)
        assert outcome(fast, recipient, rendered) == expected, recipient
        if isinstance(expected, bytes):
            composed += 1
            assert b"multipart/related" in expected and b"List-Unsubscribe-Post: " in expected
    assert composed > 80  # most rows are sendable: the comparison is not vacuous
