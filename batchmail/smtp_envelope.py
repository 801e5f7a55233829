"""A message in wire form for one server: the envelope as MAIL/RCPT arguments, and the data as
DATA (dot-stuffed) or BDAT (as is) carries it. Pure: it needs the server's EHLO keywords, not
a connection.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass

from batchmail.byte_sizes import describe_size
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.wire import has_dot_lines

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_SIZE_LIMIT = re.compile(r"[0-9]{1,20}")


class Unsendable(Exception):
    """This server cannot carry the message; the text says why."""


@dataclass(frozen=True)
class Transaction:
    """An envelope as it goes on the wire."""

    mail_from: str
    rcpt_tos: tuple[tuple[str, str], ...]  # (address as given, address as sent)
    mail_options: str  # with a leading space per option, e.g. " SIZE=123 BODY=8BITMIME"
    command_encoding: str  # "utf-8" with SMTPUTF8, else "ascii"

    def commands(self) -> list[str]:
        """MAIL and every RCPT, without line ends."""
        return [
            f"MAIL FROM:<{self.mail_from}>{self.mail_options}",
            *(f"RCPT TO:<{sent}>" for _, sent in self.rcpt_tos),
        ]

    @property
    def given_rcpt_tos(self) -> tuple[str, ...]:
        return tuple(given for given, _ in self.rcpt_tos)


def transaction(message: ComposedMessage, extensions: Container[str]) -> Transaction | Outcome:
    """The envelope in wire form, or FAILED when this server cannot carry it.
    ``extensions`` holds the server's EHLO keywords in lower case (as smtplib keeps them),
    mapped to their parameters when it is a mapping (smtplib's ``esmtp_features``)."""
    envelope = message.envelope
    smtputf8 = "smtputf8" in extensions
    try:
        _check_size(message.size, extensions)
        mail_from = _wire_address("sender", envelope.mail_from, smtputf8)
        rcpt_tos = [_wire_address("recipient", a, smtputf8) for a in envelope.rcpt_tos]
        ascii_data = message.is_ascii
        if not ascii_data and "8bitmime" not in extensions:
            raise Unsendable("the message has 8-bit data, and the server does not offer 8BITMIME")
    except Unsendable as exc:
        return Outcome(Status.FAILED, None, str(exc))
    # Non-ASCII survives _wire_address only when the server offers SMTPUTF8.
    needs_smtputf8 = not all(a.isascii() for a in [mail_from, *rcpt_tos])
    options = [f"SIZE={message.size}"] if "size" in extensions else []
    if not ascii_data:
        options.append("BODY=8BITMIME")
    if needs_smtputf8:
        options.append("SMTPUTF8")
    return Transaction(
        mail_from=mail_from,
        rcpt_tos=tuple(zip(envelope.rcpt_tos, rcpt_tos, strict=True)),
        mail_options="".join(f" {option}" for option in options),
        command_encoding="utf-8" if needs_smtputf8 else "ascii",
    )


def _check_size(size: int, extensions: Container[str]) -> None:
    """Refuse a message larger than the server said it takes (SIZE, RFC 1870): sending it
    would only end in a refusal after its last byte."""
    stated = extensions.get("size", "") if isinstance(extensions, Mapping) else ""
    limit = int(stated) if _SIZE_LIMIT.fullmatch(stated) else 0  # 0 or none: no limit stated
    if limit and size > limit:
        raise Unsendable(
            f"not sent: the message is {describe_size(size)} ({size:,} bytes), larger than the "
            f"{describe_size(limit)} ({limit:,} bytes) the server takes (its SIZE, RFC 1870)"
        )


def payload(message: ComposedMessage, *, chunking: bool) -> tuple[bytes, ...]:
    """The message's data as BDAT (``chunking``: ``crlf_lines``) or DATA (``dot_stuffed``)
    carries it, in parts. When the composer vouched for its line ends, a part with no dot to
    double goes as it is, not copied: a shared attachment goes out from the one copy the run
    holds."""
    if not message.crlf_only:
        data = message.data
        if chunking:
            return (crlf_lines(data),)
        return (dot_stuffed(data, dot_lines=message.dot_lines),)
    if chunking or not message.dot_lines:
        return message.parts
    return tuple(_dots_doubled(message.parts))


def _dots_doubled(parts: tuple[bytes, ...]) -> Iterator[bytes]:
    """``dot_stuffed`` part by part, for parts whose every line end is CRLF."""
    line_start = True  # the next part begins a line
    for part in parts:
        starts = line_start and part.startswith(b".")
        if starts or has_dot_lines(part):
            yield (b"." if starts else b"") + part.replace(b"\n.", b"\n..")
        else:
            yield part
        if part:
            line_start = part.endswith(b"\n")


def crlf_lines(data: bytes, crlf_only: bool = False) -> bytes:
    """The data with CRLF line ends only (a bare CR or LF is never sent), ending in CRLF:
    what BDAT carries as is (RFC 3030: no dot-stuffing). ``crlf_only``: the caller knows
    it is so already (a composed message's ``crlf_only``), and nothing is scanned."""
    if crlf_only:
        return data
    # Composed messages are CRLF throughout: three counts at C speed tell, and spare a
    # regex pass over every byte (140 KB a message with an attachment).
    crlf = data.count(b"\r\n")
    normalised = data
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        normalised = _LINE_END.sub(b"\r\n", data)
    return normalised if normalised.endswith(b"\r\n") else normalised + b"\r\n"


def dot_stuff(data: bytes, crlf_only: bool = False, dot_lines: bool = True) -> bytes:
    """The DATA payload: CRLF line ends (a bare CR or LF is never sent), a dot doubled at the
    start of a line (RFC 5321 4.5.2), and the closing CRLF.CRLF. ``crlf_only`` and
    ``dot_lines`` are what a composed message says of itself; the defaults assume nothing."""
    return dot_stuffed(data, crlf_only, dot_lines) + END_OF_DATA


END_OF_DATA = b".\r\n"  # after the data's own last CRLF


def dot_stuffed(data: bytes, crlf_only: bool = False, dot_lines: bool = True) -> bytes:
    """``dot_stuff`` without the closing ``END_OF_DATA``, which the caller sends after it (a
    message left as it is need not be copied to have three bytes added)."""
    lines = crlf_lines(data, crlf_only)
    if dot_lines and has_dot_lines(lines):
        # Every line end is CRLF now, so a line begins at the start or after an LF: a plain
        # replace (at C speed) doubles exactly the dots a (?m)^\. regex would.
        head = b"." if lines.startswith(b".") else b""
        lines = head + lines.replace(b"\n.", b"\n..")
    return lines


def _wire_address(role: str, address: str, smtputf8: bool) -> str:
    """The address for MAIL/RCPT: a non-ASCII domain in IDNA form, a non-ASCII local part
    only with SMTPUTF8 (RFC 6531)."""
    if _CONTROL.search(address):
        raise Unsendable(f"{role} {address!r} contains control characters")
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not local.isascii():
        if not smtputf8:
            raise Unsendable(f"{role} {address} needs SMTPUTF8, which the server does not offer")
        return address
    try:
        return f"{local}{at}{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise Unsendable(f"{role} {address}: the domain is not valid IDNA ({exc})") from exc
