"""Strict address lists and header-value safety: pure functions, no I/O.

A rendered To/Cc/Bcc/Reply-To/From value is split by a small quote-aware tokenizer
(not ``email.utils.getaddresses``, which misparses crafted input: CVE-2023-27043)
and every address is validated by ``email_validator``. Anything malformed is
refused with a message naming the offending part; nothing is ever "repaired".
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email


class AddressError(ValueError):
    """A rendered address list that is not a list of well-formed addresses."""


class HeaderError(ValueError):
    """A header name or value that could inject or corrupt header lines."""


@dataclass(frozen=True)
class Address:
    display_name: str  # "" when there is none
    addr_spec: str  # local@domain, exactly as written


# Characters RFC 5322 forbids in an unquoted display name (a phrase); "." is tolerated
# because "Dr. Smith" is common and unambiguous (obs-phrase).
_PHRASE_SPECIALS = frozenset('"()<>[]:;@\\,')
# str.splitlines() and so parts of the email package treat these as line ends, too.
_LINE_SEPARATORS = frozenset("\u2028\u2029")


def parse_address_list(value: str) -> tuple[Address, ...]:
    """The addresses in ``value``, separated by "," or ";"; () for a blank value.

    Raises AddressError for anything malformed.
    """
    if not value.strip(" \t"):
        return ()
    bad = _control_character(value)
    if bad:
        raise AddressError(f"{value!r} contains {bad}")
    return tuple(_parse_one(item) for item in _split(value))


def check_header_name(name: str) -> None:
    """Raise HeaderError unless ``name`` is RFC 5322 ftext: printable ASCII except ":"."""
    if not name:
        raise HeaderError("empty header name")
    for char in name:
        if not 33 <= ord(char) <= 126 or char == ":":
            raise HeaderError(
                f"header name {name!r} contains {char!r}: "
                "only printable ASCII without spaces or ':' is allowed"
            )


def check_header_value(name: str, value: str) -> None:
    """Raise HeaderError if ``value`` holds a line break or control character (TAB aside):
    written into a header, it could end the header and start another one."""
    bad = _control_character(value)
    if bad:
        raise HeaderError(f"the {name} value {value!r} contains {bad}; a header must be one line")


def ascii_addr_spec(addr_spec: str) -> str:
    """``addr_spec`` as it can travel without SMTPUTF8: an internationalised domain in
    its IDNA ("xn--") form. Raises AddressError for a non-ASCII local part."""
    local, _, domain = addr_spec.rpartition("@")
    if not local.isascii():
        raise AddressError(
            f'"{addr_spec}" has a non-ASCII part before the @, which needs SMTPUTF8; '
            "batchmail sends plain SMTP, so use an ASCII address for this recipient"
        )
    if domain.isascii():
        return addr_spec
    try:
        validated = validate_email(addr_spec, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f'"{addr_spec}" is not a valid email address: {exc}') from exc
    return f"{local}@{validated.ascii_domain}"


def _control_character(value: str) -> str | None:
    """Describe the first character of ``value`` that has no place in a header, if any."""
    for char in value:
        if char == "\t":
            continue
        if unicodedata.category(char) == "Cc" or char in _LINE_SEPARATORS:
            kind = "a line break" if char in "\r\n\u2028\u2029" else "a control character"
            return f"{kind} (U+{ord(char):04X})"
    return None


def _split(value: str) -> list[str]:
    """Split at "," and ";" outside double quotes and angle brackets."""
    items: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    depth = 0
    for char in value:
        if escaped:
            escaped = False
        elif in_quotes:
            escaped = char == "\\"
            in_quotes = char != '"'
        elif char == '"':
            in_quotes = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(depth - 1, 0)  # a stray ">" is reported with its own item
        elif char in ",;" and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    if in_quotes:
        raise AddressError(f'"{value}" has a double quote (") that is never closed')
    items.append("".join(current))
    return items


def _parse_one(item: str) -> Address:
    text = item.strip(" \t")
    if not text:
        raise AddressError(
            "an empty address (two separators in a row, or one at the start or end); "
            "leave no empty entries in the list"
        )
    if "\t" in text:
        raise AddressError(f'"{text}" contains a tab')
    if "=?" in text:
        raise AddressError(
            f'"{text}" contains "=?", the start of an RFC 2047 encoded word that a mail '
            "reader would decode into different text"
        )
    opens, closes = _brackets(text)
    if not opens and not closes:
        return Address("", _addr_spec(text))
    if len(opens) != 1 or len(closes) != 1 or closes[0] < opens[0]:
        raise AddressError(f'"{text}" is not one address: its "<" and ">" do not pair up')
    if closes[0] != len(text) - 1:
        raise AddressError(f'"{text}" is not one address: there is text after ">"')
    name = _display_name(text[: opens[0]].strip(" "), text)
    return Address(name, _addr_spec(text[opens[0] + 1 : -1].strip(" ")))


def _brackets(text: str) -> tuple[list[int], list[int]]:
    """Positions of "<" and ">" outside double quotes."""
    opens: list[int] = []
    closes: list[int] = []
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes:
            escaped = char == "\\"
            in_quotes = char != '"'
        elif char == '"':
            in_quotes = True
        elif char == "<":
            opens.append(index)
        elif char == ">":
            closes.append(index)
    return opens, closes


def _display_name(raw: str, item: str) -> str:
    """The display name before "<": empty, one quoted string, or a plain phrase."""
    if not raw.startswith('"'):
        for char in raw:
            if char in _PHRASE_SPECIALS:
                raise AddressError(
                    f'"{item}": the name contains {char!r}; put the whole name in double quotes'
                )
        return raw
    chars: list[str] = []
    escaped = False
    for index, char in enumerate(raw[1:], 1):
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            if index != len(raw) - 1:
                raise AddressError(
                    f'"{item}" is not one address: the name has text after its quotes'
                )
            return "".join(chars)
        else:
            chars.append(char)
    # _split has already refused an unclosed quote; this guards direct misuse.
    raise AddressError(f'"{item}" has a double quote (") that is never closed')


def _addr_spec(spec: str) -> str:
    if not spec:
        raise AddressError('an empty address between "<" and ">"')
    try:
        validate_email(spec, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f'"{spec}" is not a valid email address: {exc}') from exc
    return spec
