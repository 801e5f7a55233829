"""Header fields: write each one (RFC 2047 encoded words by ``batchmail.rfc2047``, the
email package only for the structured fields it parses itself: Date, Message-ID,
MIME-Version, Content-*), and prove that the header bytes read back as what was meant.

Python 3.11.7's email package can change a header's meaning while folding it: an encoded
word in a value is decoded and its line breaks written raw (CVE-2024-6923), an encoded
comma can end up as a separator (CVE-2025-1795), the space beside an encoded word is
dropped, repeated spaces vanish from long non-ASCII values, and a long display name can
gain a space. So Subject, extra headers and address headers are written by ``rfc2047``,
and nothing is trusted: ``check_header_block`` splits the header block strictly at CRLF,
checks the field names and their order, and reads every field back with
``email.policy.default`` (what a receiving Python would do); a field that reads
differently, or that the parser fails on, is a problem for that row and field, never sent.

Intended values: an unstructured value (Subject, an extra header) is its text; an
address header is its list of (display name, address). Compose strips surrounding blanks
from unstructured values before they get here, and ``fields`` bounds their length, so
writing and reading back take time linear in the limit.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import BaseHeader, HeaderRegistry
from functools import lru_cache
from typing import cast

from batchmail.addresses import Address
from batchmail.header_oneline import is_unstructured, one_line
from batchmail.rfc2047 import address_field, unstructured_field
from batchmail.wire import MAX_LINE

# policy.SMTP writes short-lined UTF-8 bodies as raw 8bit; 7bit makes the email package
# pick quoted-printable or base64 instead, so every byte sent is ASCII.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
# RFC 6532 headers (raw UTF-8) for a message that needs SMTPUTF8 anyway.
UTF8_POLICY = POLICY.clone(utf8=True)
_MAX_LENGTH = 78  # POLICY.max_line_length: where a verbatim header is folded
_READER = email.policy.default
_CACHE_SIZE = 128  # folded static headers and read-back verdicts; bounded, so memory is flat

HeaderValue = str | tuple[Address, ...]
_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ":"


@dataclass(frozen=True)
class Header:
    """One header field as meant: a name, and text or a list of addresses."""

    name: str
    value: HeaderValue
    key: str  # what a problem with it names, e.g. "message.subject"
    # Written as it is, never as encoded words, folded only after the ", " between its
    # entries: List-Unsubscribe, whose <URL>s a reader must find as they are (RFC 2369).
    verbatim: bool = False

    def email_value(self) -> str | list[HeaderAddress]:
        """The value as the email package takes it (msg[name] = value)."""
        if isinstance(self.value, str):
            return self.value
        return [_header_address(a) for a in self.value]


def _header_address(address: Address) -> HeaderAddress:
    local, _, domain = address.addr_spec.rpartition("@")
    if local.isascii():
        return HeaderAddress(address.display_name, addr_spec=address.addr_spec)
    # The addr_spec parser refuses a non-ASCII local part (a defect); given in pieces,
    # it is written as raw UTF-8 under an SMTPUTF8 policy (RFC 6532).
    return HeaderAddress(address.display_name, local, domain)


def fold(header: Header, utf8: bool = False) -> bytes:
    """The header's bytes: as ``raw_value`` says for a header batchmail writes itself,
    else exactly as the email package's generator writes it (under UTF8_POLICY when
    ``utf8``, else POLICY): the bytes ``mime_reference`` writes either way."""
    simple = None if utf8 or header.verbatim else one_line(header.name, header.value)
    if simple is not None:
        return simple  # the same bytes as below, without the work
    raw = raw_value(header)
    if raw is not None:
        # UTF-8 only in an SMTPUTF8 message's non-ASCII address (RFC 6532): the rest is ASCII.
        return f"{header.name}: {raw}\r\n".encode()
    return _fold(header.name, header.value, utf8)


def raw_value(header: Header) -> str | None:
    """The value as written after "Name: " (folded, without the final CRLF) when batchmail
    writes the header itself: a verbatim header, every address header and every
    unstructured header. None: the email package writes it (MIME's structured fields)."""
    if header.verbatim:
        return verbatim_text(header)
    return _written(header.name, header.value)


@lru_cache(maxsize=_CACHE_SIZE)  # the same From or Subject on every row is written once
def _written(name: str, value: HeaderValue) -> str | None:
    if isinstance(value, tuple):
        field = address_field(name, value)
    elif is_unstructured(name):
        field = unstructured_field(name, value)
    else:
        return None
    return field[len(name) + 2 : -2]


def verbatim_text(header: Header) -> str:
    """A verbatim header's value as written after "Name: ": on one line if it fits,
    else with a line break after each ", " that separates two entries."""
    assert isinstance(header.value, str)
    if len(header.name) + 2 + len(header.value) <= _MAX_LENGTH:
        return header.value
    return ",\r\n ".join(header.value.split(", "))


@lru_cache(maxsize=_CACHE_SIZE)
def _fold(name: str, value: HeaderValue, utf8: bool) -> bytes:
    policy = UTF8_POLICY if utf8 else POLICY
    header = Header(name, value, "")
    # What msg[name] = value followed by BytesGenerator does: header_store_parse makes
    # the header object (header_factory) and the generator writes fold_binary of it.
    # The class is cached: the registry builds a new class on every lookup.
    try:
        stored = _header_class(name)(name, header.email_value())
        return policy.fold_binary(name, stored)
    except Exception as exc:  # its parser and folder fail on some values: the row's problem
        raise ValueError(f"the email package cannot write the {name} header ({exc!r})") from exc


@lru_cache(maxsize=256)
def _header_class(name: str) -> type[BaseHeader]:
    return cast(HeaderRegistry, POLICY.header_factory)[name]


@lru_cache(maxsize=256)
def _reader_class(name: str) -> type[BaseHeader]:
    return cast(HeaderRegistry, _READER.header_factory)[name]


def check_header_block(
    data: bytes, headers: tuple[Header, ...], utf8: bool
) -> list[tuple[str, str]]:
    """(key, what is wrong) for every header of ``headers`` that the message ``data``
    does not carry exactly as meant; the fields after them must be MIME's own."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return [("message", "the message has no blank line after its headers")]
    fields = split_fields(data[: end + 2])
    if isinstance(fields, str):
        return [("message", fields)]
    problems: list[tuple[str, str]] = []
    for index, header in enumerate(headers):
        if index >= len(fields) or fields[index][0] != header.name:
            return [(header.key, f"the {header.name} header is not where it was written")]
        folded = fields[index][1]
        if max(map(len, folded.split(b"\r\n"))) > MAX_LINE:
            problems.append((header.key, _too_long(header)))
            continue
        if not utf8 and folded == one_line(header.name, header.value):
            continue  # reads back as written by construction (see header_oneline)
        trouble = _reads_back(folded, header.name, header.value, utf8)
        if trouble:
            problems.append((header.key, trouble))
    extra = [name for name, _ in fields[len(headers) :] if not name.lower().startswith("content-")]
    if extra:
        problems.append(("message", f"unexpected header fields {extra}"))
    return problems


def _too_long(header: Header) -> str:
    return (
        f"the {header.name} header would have a line longer than {MAX_LINE} octets "
        "(a word that long cannot be folded); shorten it"
    )


def split_fields(block: bytes) -> list[tuple[str, bytes]] | str:
    """A header block split strictly: a field starts at a line that does not begin with a
    space or tab; every line ends in CRLF. (name, the field's bytes), or what is wrong."""
    if not block.endswith(b"\r\n"):
        return "the header block does not end in CRLF"
    fields: list[tuple[str, bytearray]] = []
    for line in block[:-2].split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            return "a header line holds a bare CR or LF"
        if line[:1] in (b" ", b"\t"):
            if not fields or not line.strip(b" \t"):
                return "a header line is blank or continues nothing"
            fields[-1][1].extend(line + b"\r\n")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return f"a header line has no field name: {line[:40]!r}"
        fields.append((name.decode("ascii"), bytearray(line + b"\r\n")))
    return [(name, bytes(folded)) for name, folded in fields]


@lru_cache(maxsize=_CACHE_SIZE)
def _reads_back(folded: bytes, name: str, value: HeaderValue, utf8: bool) -> str | None:
    """Why ``folded`` does not read back as ``value``, or None when it does."""
    try:
        text = folded.decode("utf-8" if utf8 else "ascii")
    except UnicodeDecodeError:
        return "the folded header is not " + ("UTF-8" if utf8 else "ASCII")
    # Unfold the way email.parser does: drop the CRLFs, keep the blanks after them.
    raw = text.split(":", 1)[1].lstrip(" \t").replace("\r\n", "")
    try:
        read = _reader_class(name)(name, raw)
        return _difference(read, value, utf8)
    except Exception as exc:  # the email package's parser fails on some values (e.g. a
        # name starting with "."): a value no reader is known to read right is refused
        return f"the email package cannot read the {name} header back ({exc!r})"


def _difference(read: BaseHeader, value: HeaderValue, utf8: bool) -> str | None:
    if isinstance(value, str):
        if str(read) == value:
            return None
        return f"{value!r} would reach readers as {str(read)!r}"
    found = _addresses_of(read)
    meant = [(a.display_name, a.addr_spec) for a in value]
    # Under RFC 6532 a non-ASCII local part is expected; email.policy.default flags it.
    defects = [d for d in read.defects if not (utf8 and isinstance(d, NonASCIILocalPartDefect))]
    if found == meant and not defects:
        return None
    return f"{_shown(meant)} would reach readers as {_shown(found)}"


def _addresses_of(read: BaseHeader) -> list[tuple[str, str]] | None:
    groups = getattr(read, "groups", None)
    if groups is None or any(group.display_name is not None for group in groups):
        return None  # a group, or not an address header at all
    return [(a.display_name, a.addr_spec) for g in groups for a in g.addresses]


def _shown(addresses: list[tuple[str, str]] | None) -> str:
    if addresses is None:
        return "something that is not an address list"
    return ", ".join(f"{name!r} <{spec}>" if name else spec for name, spec in addresses)
