"""The fast way to the same bytes as ``mime_reference``: the MIME skeleton is built from
bytes prepared once per process, and per message only the headers and the bodies are
encoded (attachments arrive already serialized).

Building an ``EmailMessage`` costs about as much as everything else per row together:
header objects parsed and re-parsed while the structure is rearranged, a new header
class per header, the generator's line-by-line copy of every attachment. Here each
header is written by ``headers.fold`` (the reference's own header bytes: encoded words by
``rfc2047``, MIME's structured fields by the email package, cached for values that
repeat), a body is encoded as ``email.contentmanager`` does it, and the parts are
joined as ``email.generator`` joins them.

``writes_like_reference()`` compares both paths on probe messages of every shape; the
composer uses this module only when they agree, and only for ASCII (non-SMTPUTF8)
messages. The tests compare both on thousands of generated messages.
"""

from __future__ import annotations

import binascii
from email import quoprimime
from email.message import MIMEPart
from functools import cache

from batchmail.addresses import Address
from batchmail.attachments import AttachmentPart
from batchmail.headers import POLICY, Header, fold
from batchmail.mime_reference import Content, boundary, reference_bytes

_CRLF = b"\r\n"
_MAX_LINE: int = POLICY.max_line_length or 78  # the line length the email package aims for
# A stand-in boundary of the real ones' length and alphabet ("bm-" and 40 hex digits),
# so that a multipart Content-Type folds the same way and can be filled in per message.
_PROBE_BOUNDARY = "bm-" + "0" * 40
_RELATED_TYPE = '; type="text/html"'  # RFC 2387: a multipart/related names its root's type


def write(content: Content) -> bytes:
    """``reference_bytes(content)`` for an ASCII message, computed faster."""
    return b"".join(write_parts(content)[0])


def write_parts(content: Content) -> tuple[tuple[bytes, ...], bytes]:
    """The message in parts (joined: the message): the attachments' bytes as they were
    serialized when read, each a part of its own (the very object, not a copy), and what
    lies between them; and the message's own bytes: its headers and its text and html
    parts. The rest is attachments (checked when they were read) and boundaries."""
    header_block = b"".join(fold(header) for header in content.headers)
    body, own_body = _body(content)
    own = header_block + own_body
    if not content.attachments:
        return (header_block + body,), own
    mixed = boundary(content.message_id, 0, content.bodies)
    dash = b"--" + mixed.encode("ascii")
    between = _CRLF + dash + _CRLF
    parts = [b"".join([header_block, _multipart_head("mixed", mixed), between, body])]
    for attachment in content.attachments:
        parts[-1] += between  # a few kilobytes at most: the attachments are not copied
        parts.append(attachment.wire)
        parts.append(b"")
    parts[-1] += _CRLF + dash + b"--" + _CRLF
    return tuple(parts), own


def _body(content: Content) -> tuple[bytes, bytes]:
    """The text/html part, or the alternative of both: Content-* headers, CRLF, body;
    and the same without the inline images' bytes (checked when they were read)."""
    # In walk order the first part below a multipart/mixed is second, else first.
    first = 1 if content.attachments else 0
    parts = []
    own = []
    if content.text is not None:
        parts.append(_text_part("plain", content.text))
        own.append(parts[-1])
    if content.html is not None:
        html = _text_part("html", content.html)
        own.append(html)
        if content.images:
            # The related comes after the alternative and the text part, if they are there.
            number = first + 2 if content.text is not None else first
            related = boundary(content.message_id, number, content.bodies)
            html = _multipart_head("related", related, _RELATED_TYPE) + _CRLF
            html += _join_parts(related, [own[-1], *(image.wire for image in content.images)])
        parts.append(html)
    if len(parts) == 1:
        return parts[0], b"".join(own)
    alternative = boundary(content.message_id, first, content.bodies)
    head = _multipart_head("alternative", alternative) + _CRLF
    return head + _join_parts(alternative, parts), head + b"".join(own)


def _join_parts(separator: str, parts: list[bytes]) -> bytes:
    """A multipart's body as email.generator writes it (no preamble or epilogue)."""
    dash = b"--" + separator.encode("ascii")
    return dash + _CRLF + (_CRLF + dash + _CRLF).join(parts) + _CRLF + dash + b"--" + _CRLF


def _text_part(subtype: str, text: str) -> bytes:
    cte, data = encode_text(text)
    return _text_head(subtype, cte) + _CRLF + data


def encode_text(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, the body on the wire) for a UTF-8 text part: the
    choice and the encoding of email.contentmanager's _encode_text under a 7bit policy,
    with the generator's line ends (every line ending in CRLF)."""
    lines = text.encode("utf-8").splitlines()
    if max((len(line) for line in lines), default=0) <= _MAX_LINE:
        body = b"\n".join(lines) + b"\n"
        if body.isascii():
            return "7bit", body.replace(b"\n", _CRLF)
    sniff = _CRLF.join(lines[:10]) + _CRLF
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        return "base64", _base64(_CRLF.join(lines) + _CRLF)
    if len(lines) > 10:
        # body_encode encodes line by line: the first ten lines are the sniff's.
        rest = (b"\n".join(lines[10:]) + b"\n").decode("latin-1")
        return "quoted-printable", _crlf(sniff_qp + quoprimime.body_encode(rest, _MAX_LINE))
    return "quoted-printable", _crlf(sniff_qp)


def _base64(data: bytes) -> bytes:
    """email's _encode_base64: as many bytes per line as fit in 78 characters (57)."""
    step = _MAX_LINE // 4 * 3
    return b"".join(
        binascii.b2a_base64(data[start : start + step], newline=False) + _CRLF
        for start in range(0, len(data), step)
    )


def _crlf(encoded: str) -> bytes:
    """Line ends as the generator writes them: every CR, LF or CRLF becomes CRLF."""
    return encoded.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("ascii")


@cache
def _text_head(subtype: str, cte: str) -> bytes:
    # set_content() writes the charset parameter, then the Content-Transfer-Encoding.
    content_type = Header("Content-Type", f'text/{subtype}; charset="utf-8"', "")
    return fold(content_type) + fold(Header("Content-Transfer-Encoding", cte, ""))


def _multipart_head(subtype: str, separator: str, params: str = "") -> bytes:
    head = _multipart_template(subtype, params)
    if _PROBE_BOUNDARY.encode("ascii") not in head:  # folded inside the boundary
        value = f'multipart/{subtype}{params}; boundary="{separator}"'
        return fold(Header("Content-Type", value, ""))
    return head.replace(_PROBE_BOUNDARY.encode("ascii"), separator.encode("ascii"))


@cache
def _multipart_template(subtype: str, params: str) -> bytes:
    value = f'multipart/{subtype}{params}; boundary="{_PROBE_BOUNDARY}"'
    return fold(Header("Content-Type", value, ""))


@cache
def writes_like_reference() -> bool:
    """Whether this interpreter's email package writes what this module writes, for
    every message shape and body encoding (checked once per process)."""
    return all(write(content) == reference_bytes(content) for content in _probes())


def _probes() -> list[Content]:
    """Every shape (text, html, both; no, one, two attachments) and every body encoding
    (7bit, quoted-printable of up to and over ten lines, base64), few messages."""
    headers = (
        Header("From", (Address("Zoë Probe", "probe@example.com"),), ""),
        Header("To", (Address("Lee, Ann", "ann@example.com"),), ""),  # quoted: folded
        Header("Subject", "Grüße, probe", ""),
        Header("MIME-Version", "1.0", ""),  # compose always writes it
    )
    one = (_probe_attachment(),)
    image = (_probe_image("logo.png"),)
    images = (*image, _probe_image("Übersicht.gif"))
    ascii_, short, long, wide = "plain\n", "Zoë,\n" * 3, "Zoë,\n" * 12, "张伟" * 60 + "\n"
    cases = [  # (text, html, attachments, inline images): 7bit, quoted-printable and
        # base64 in each place; the related part alone, in an alternative, in a mixed
        (ascii_, None, (), ()),
        (None, short, one, ()),
        (long, ascii_, one * 2, ()),
        (wide, wide, one, ()),
        (short, long, (), ()),
        (None, wide, (), ()),
        (ascii_, None, one, ()),
        (None, ascii_, (), image),
        (short, wide, (), images),
        (None, long, one, image),
        (wide, ascii_, one * 2, images),
    ]
    unsubscribe = (
        Header("List-Unsubscribe", "<https://example.org/u/" + "x" * 80 + ">", "", True),
        Header("List-Unsubscribe", "<https://e.org/u/1>, <mailto:u@e.org>", "", True),
        Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click", ""),
    )
    return [
        Content(headers + unsubscribe * (number % 2), t, h, a, "<probe@example.com>", False, i)
        for number, (t, h, a, i) in enumerate(cases)
    ]


def _probe_attachment() -> AttachmentPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(
        b"%PDF probe\x00", "application", "pdf", disposition="attachment", filename="Übersicht.pdf"
    )
    return AttachmentPart(part, part.as_bytes(policy=POLICY))


def _probe_image(name: str) -> AttachmentPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(
        b"GIF89a probe\x00", "image", "gif", disposition="inline", filename=name, cid="<p@b>"
    )
    return AttachmentPart(part, part.as_bytes(policy=POLICY), "p@b")
