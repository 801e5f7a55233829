"""Rendered header fields in, validated ``Header`` values out, every problem of a row
collected with its row and field.

Every value is checked for line breaks and control characters before the email package
sees it; address headers are built from strictly parsed addresses, never from raw strings
(CSV values in them cannot add structure: see ``batchmail.addresses``), with addr-specs
in their wire form and display names that every reader reads back alike
(``rfc2047.phrase_problem``); unstructured values (Subject, extra headers) lose
surrounding blanks and may not hold an RFC 2047 encoded word. Every value is bounded in
length before anything parses it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from batchmail.addresses import (
    Address,
    AddressError,
    HeaderError,
    ascii_addr_spec,
    check_header_name,
    check_header_value,
    parse_address_list,
    reveal,
    wire_addr_spec,
)
from batchmail.campaign import Campaign
from batchmail.errors import Problem
from batchmail.headers import Header
from batchmail.render import ADDRESS_HEADERS, RenderedFields
from batchmail.rfc2047 import phrase_problem
from batchmail.unsubscribe import POST_VALUE, list_unsubscribe, url_problem

# Headers compose writes itself; an extra header with one of these names would
# duplicate or contradict them. (The email package also treats "Orig-Date" as a Date.)
_STRUCTURAL = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "orig-date", "message-id"}
    | {"mime-version"}
)
_STRUCTURAL_PREFIXES = ("content-", "resent-")
# Written by compose when the campaign has message.unsubscribe.
_UNSUBSCRIBE = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
# The email package decodes these while storing a header value, so a CSV value could
# smuggle in text (even line breaks) that was never checked (CVE-2024-6923).
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
# The longest values written into a header, checked before anything parses or folds them
# (the email package's parser takes time and memory that grow faster than the value).
# Unstructured text (Subject, an extra header): 4,000 characters is some 50 lines of
# encoded words. An address field: 10,000 characters is a list of about 200 addresses.
MAX_TEXT_VALUE = 4_000
MAX_ADDRESS_VALUE = 10_000
# (RenderedFields attribute, campaign key, header name, in the envelope) of the address
# fields, in the order their headers are written.
_ADDRESS_FIELDS = (
    ("from_", "message.from", "From", True),
    ("to", "message.to", "To", True),
    ("cc", "message.cc", "Cc", True),
    ("bcc", "message.bcc", "Bcc", True),
    ("reply_to", "message.reply_to", "Reply-To", False),
)


def parse_addresses(
    rendered: RenderedFields, row: str, problems: list[Problem]
) -> dict[str, tuple[Address, ...]]:
    """Every address field, parsed strictly, with addr-specs in their wire form."""
    parsed: dict[str, tuple[Address, ...]] = {}
    failed: set[str] = set()
    for field, key, header, in_envelope in _ADDRESS_FIELDS:
        value = getattr(rendered, field)
        try:
            _check_length(header, value, MAX_ADDRESS_VALUE)
            parsed[field] = _parse_wire(header, value, in_envelope)
        except (AddressError, HeaderError) as exc:
            problems.append(Problem(f"{row}, {key}", str(exc)))
            parsed[field] = ()
            failed.add(field)
    if len(parsed["from_"]) != 1 and "from_" not in failed:
        found = len(parsed["from_"])
        shown = reveal(rendered.from_)
        problems.append(
            Problem(
                f"{row}, message.from", f"needs exactly one address, found {found} in {shown!r}"
            )
        )
    recipients = parsed["to"] + parsed["cc"] + parsed["bcc"]
    if not recipients and not failed & {"to", "cc", "bcc"}:
        problems.append(Problem(f"{row}, message.to", "no recipient: to, cc and bcc are all empty"))
    return parsed


@lru_cache(maxsize=256)  # the same From, Cc or Bcc on every row is validated once
def _parse_wire(header: str, value: str, in_envelope: bool) -> tuple[Address, ...]:
    check_header_value(header, reveal(value))
    wire = wire_addr_spec if in_envelope else ascii_addr_spec
    found = tuple(Address(a.display_name, wire(a.addr_spec)) for a in parse_address_list(value))
    for address in found:
        trouble = phrase_problem(address.display_name)
        if trouble:
            raise AddressError(trouble)
    return found


def _check_length(header: str, value: str, limit: int) -> None:
    """Raise HeaderError if ``value`` is longer than ``limit`` characters."""
    if len(value) > limit:
        raise HeaderError(
            f"the {header} value is longer than {limit:,} characters, the most batchmail "
            "writes into one header; shorten it"
        )


def address_headers(addresses: dict[str, tuple[Address, ...]]) -> tuple[Header, ...]:
    """From, and To, Cc and Reply-To when they have addresses, in that order."""
    # Bcc is deliberately absent: those recipients are in the envelope only.
    headers = [Header("From", addresses["from_"], "message.from")]
    for name, field, key in (
        ("To", "to", "message.to"),
        ("Cc", "cc", "message.cc"),
        ("Reply-To", "reply_to", "message.reply_to"),
    ):
        if addresses[field]:
            headers.append(Header(name, addresses[field], key))
    return tuple(headers)


def extra_headers(rendered: RenderedFields, row: str, problems: list[Problem]) -> list[Header]:
    """The campaign's extra headers for this row, in campaign order; a blank one is left out."""
    headers: list[Header] = []
    for name, value in rendered.headers:
        key = f"message.headers.{name}"
        where = f"{row}, {key}"
        if not value.strip(" \t"):
            continue  # an empty value means "not for this row"
        if name.lower() in ADDRESS_HEADERS:  # never hand an address header a raw string
            try:
                _check_length(name, value, MAX_ADDRESS_VALUE)
                found = _parse_wire(name, value, False)
                if len(found) != 1:
                    raise AddressError(f"needs exactly one address, found {len(found)}")
                headers.append(Header(name, found, key))
            except (AddressError, HeaderError) as exc:
                problems.append(Problem(where, str(exc)))
            continue
        text = unstructured(name, value, where, problems)
        if text is not None:
            headers.append(Header(name, text, key))
    return headers


def unstructured(name: str, value: str, where: str, problems: list[Problem]) -> str | None:
    """The header text to send (surrounding blanks removed), or None and a problem."""
    try:
        _check_length(name, value, MAX_TEXT_VALUE)
        check_header_value(name, value)
    except HeaderError as exc:
        problems.append(Problem(where, str(exc)))
        return None
    if _ENCODED_WORD.search(value):
        problems.append(
            Problem(
                where,
                f"{value!r} contains an RFC 2047 encoded word (=?...?=) that mail readers "
                "would decode into different text",
            )
        )
        return None
    return value.strip(" \t")


def listed(header: Header) -> tuple[Address, ...]:
    """The addresses of an address header; () for any other."""
    return () if isinstance(header.value, str) else header.value


def unsubscribe_headers(
    campaign: Campaign, rendered: RenderedFields, row: str, problems: list[Problem]
) -> tuple[Header, ...]:
    """List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) when the campaign asks for
    them; a rendered URL that is not a clean https:// URL is a problem of the row."""
    config = campaign.message.unsubscribe
    url = rendered.unsubscribe_url
    if config is None or url is None:
        return ()
    trouble = url_problem(url)
    if trouble:
        problems.append(Problem(f"{row}, message.unsubscribe.url", trouble))
        return ()
    value = list_unsubscribe(url, config.mailto)
    return (
        Header("List-Unsubscribe", value, "message.unsubscribe.url", verbatim=True),
        Header("List-Unsubscribe-Post", POST_VALUE, "message.unsubscribe"),
    )


def header_name_problems(campaign: Campaign) -> list[Problem]:
    """What is wrong with the extra headers' names: not ftext, written by compose, twice."""
    problems: list[Problem] = []
    seen: set[str] = set()
    written = _STRUCTURAL | (_UNSUBSCRIBE if campaign.message.unsubscribe else frozenset())
    for name, _ in campaign.message.headers:
        where = campaign.where(f"message.headers.{name}")
        lower = name.lower()
        try:
            check_header_name(name)
        except HeaderError as exc:
            problems.append(Problem(where, str(exc)))
        if lower in _UNSUBSCRIBE and lower in written:
            problems.append(
                Problem(
                    where,
                    f"batchmail writes the {name} header itself from message.unsubscribe; "
                    "remove it from message.headers",
                )
            )
        elif lower in written or lower.startswith(_STRUCTURAL_PREFIXES):
            problems.append(
                Problem(
                    where,
                    f"batchmail writes the {name} header itself; set it through the message "
                    "keys (from, to, cc, bcc, reply_to, subject) or remove it",
                )
            )
        elif lower in seen:
            problems.append(Problem(where, f"the {name} header is given twice"))
        seen.add(lower)
    return problems
