"""Strict address lists and header-value safety: pure functions, no I/O.

A rendered To/Cc/Bcc/Reply-To/From value is split by a small quote-aware tokenizer
(not ``email.utils.getaddresses``, which misparses crafted input: CVE-2023-27043)
and every address is validated by ``email_validator``. Anything malformed is
refused with a message naming the offending part; nothing is ever "repaired".

Values from the CSV cannot add structure. The renderer passes every value it fills
into an address template through ``protect``, which shifts the characters that make
address-list structure (``,`` ``;`` ``<`` ``>`` ``"`` ``\\`` ``(`` ``)`` ``[`` ``]``
``:`` ``@``) into a private-use range. The tokenizer splits, quotes and brackets only
at the characters the template's author typed, so a CSV value can never add a
recipient, close a bracket or open a quote. Where a protected value lands decides
what it may be:

- in a display name it is literal text: ``{{ name }} <{{ email }}>`` with the name
  ``Doe, John`` gives the display name ``Doe, John`` (quoted on the wire). That is
  the value as the user wrote it, not a repair.
- in an address only its ``@`` counts; any other of those characters makes the row
  refused: ``{{ email }}`` holding ``a@x.org, b@y.org`` is not an address.

A template author who wants a column to hold a whole address list writes
``{{ column | address_list }}``; that filter marks the value as structure.
"""

from __future__ import annotations

import functools
import re
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
# Control characters (Unicode category Cc: U+0000-U+001F and U+007F-U+009F) except TAB,
# and U+2028/U+2029, which str.splitlines() and so parts of the email package treat as
# line ends, too.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# The characters a CSV value may not use as address-list structure (see the docstring),
# and where protect() moves them: U+F0000 + the character's code, in Plane 15's
# private-use area, which no CSV value may contain itself.
_STRUCTURAL = ',;<>"\\()[]:@'
_SHIFT = 0xF0000
_PROTECT = str.maketrans({char: chr(_SHIFT + ord(char)) for char in _STRUCTURAL})
_REVEAL = str.maketrans({chr(_SHIFT + ord(char)): char for char in _STRUCTURAL})
_PROTECTED_AT = chr(_SHIFT + ord("@"))
_SHIFTED = re.compile(f"[{chr(_SHIFT)}-{chr(_SHIFT + 0xFF)}]")


def protect(value: str) -> str:
    """``value`` with its structural characters made literal, for an address template.

    Raises AddressError if ``value`` holds a character of the range used for that."""
    found = _SHIFTED.search(value)
    if found:
        raise AddressError(
            f"{value!r} contains the private-use character U+{ord(found.group()):05X}, "
            "which batchmail reserves; remove it"
        )
    return value.translate(_PROTECT)


def reveal(text: str) -> str:
    """``text`` with protected characters shown as what they were (for display names
    and messages)."""
    return text.translate(_REVEAL)


def parse_address_list(value: str) -> tuple[Address, ...]:
    """The addresses in ``value``, separated by "," or ";"; () for a blank value.

    ``value`` may hold protected characters (see ``protect``); the display names and
    addresses returned hold none. Raises AddressError for anything malformed.
    """
    if not value.strip(" \t"):
        return ()
    bad = _control_character(value)
    if bad:
        raise AddressError(f"{reveal(value)!r} contains {bad}")
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


def wire_addr_spec(addr_spec: str) -> str:
    """``addr_spec`` as it travels: an internationalised domain in its IDNA ("xn--")
    form. A non-ASCII local part stays as written; it needs SMTPUTF8 (RFC 6531), which
    the SMTP session asks for, and raw UTF-8 headers (RFC 6532)."""
    local, _, domain = addr_spec.rpartition("@")
    if domain.isascii():
        return addr_spec
    try:
        validated = validate_email(addr_spec, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f'"{addr_spec}" is not a valid email address: {exc}') from exc
    return f"{local}@{validated.ascii_domain}"


def ascii_addr_spec(addr_spec: str) -> str:
    """``wire_addr_spec`` for an address that is not in the SMTP envelope (Reply-To,
    Sender): nothing would ask the server for SMTPUTF8, so the local part must be ASCII."""
    local = addr_spec.rpartition("@")[0]
    if not local.isascii():
        raise AddressError(
            f'"{addr_spec}" has a non-ASCII part before the @; only from, to, cc and bcc '
            "addresses may (they go to the server, which must offer SMTPUTF8)"
        )
    return wire_addr_spec(addr_spec)


def identity(addr_spec: str) -> str:
    """``addr_spec`` as compared, never as sent: surrounding spaces trimmed, the domain in
    its lower-case IDNA ("xn--") form, the part before the @ lower-cased (NFC first), as
    every mailbox provider treats it. ``Ann@Bücher.example `` and ``ann@xn--bcher-kva.example``
    are one mailbox. Raises AddressError for a value that is not one address."""
    text = addr_spec.strip()
    local, _, domain = text.rpartition("@")
    if _plainly_valid(text):
        return f"{local.lower()}@{domain.lower()}"
    if _DOT_ATOM.fullmatch(local):  # the full check costs 0.4 ms: once per domain, cached
        ascii_domain = _ascii_domain(domain)
        if ascii_domain and len(local) + 1 + len(ascii_domain) <= _MAX_ADDRESS:
            return f"{local.lower()}@{ascii_domain}"
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f'"{text}" is not a valid email address: {exc}') from exc
    local = unicodedata.normalize("NFC", valid.local_part).lower()
    return f"{local}@{valid.ascii_domain.lower()}"


def key_identity(key: str) -> str:
    """A recipient key as compared and journalled: its ``identity`` when it is an address,
    else the key with surrounding spaces trimmed."""
    text = key.strip()
    if "@" not in text:
        return text
    try:
        return identity(text)
    except AddressError:
        return text


def _control_character(value: str) -> str | None:
    """Describe the first character of ``value`` that has no place in a header, if any."""
    found = _NOT_IN_HEADER.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "a line break" if char in "\r\n\u2028\u2029" else "a control character"
    return f"{kind} (U+{ord(char):04X})"


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
        raise AddressError(f'"{reveal(value)}" has a double quote (") that is never closed')
    items.append("".join(current))
    return items


def _parse_one(item: str) -> Address:
    text = item.strip(" \t")
    shown = reveal(text)
    if not text:
        raise AddressError(
            "an empty address (two separators in a row, or one at the start or end); "
            "leave no empty entries in the list"
        )
    if "\t" in text:
        raise AddressError(f'"{shown}" contains a tab')
    if "=?" in shown:
        raise AddressError(
            f'"{shown}" contains "=?", the start of an RFC 2047 encoded word that a '
            "mail reader would decode into different text"
        )
    opens, closes = _brackets(text)
    if not opens and not closes:
        return Address("", _addr_spec(text))
    if len(opens) != 1 or len(closes) != 1 or closes[0] < opens[0]:
        raise AddressError(f'"{shown}" is not one address: its "<" and ">" do not pair up')
    if closes[0] != len(text) - 1:
        raise AddressError(f'"{shown}" is not one address: there is text after ">"')
    name = reveal(_display_name(text[: opens[0]].strip(" "), shown))
    if "=?" in name:  # "=\?" in quotes unescapes to one
        raise AddressError(
            f'"{shown}": the name {name!r} contains "=?", the start of an RFC 2047 encoded '
            "word that a mail reader would decode into different text"
        )
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


def _display_name(raw: str, shown: str) -> str:
    """The display name before "<": empty, one quoted string, or a plain phrase
    (protected characters still protected)."""
    if not raw.startswith('"'):
        for char in raw:
            if char in _PHRASE_SPECIALS:
                raise AddressError(
                    f'"{shown}": the name contains {char!r}; put the whole name in double quotes'
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
                    f'"{shown}" is not one address: the name has text after its quotes'
                )
            return "".join(chars)
        else:
            chars.append(char)
    # _split has already refused an unclosed quote; this guards direct misuse.
    raise AddressError(f'"{shown}" has a double quote (") that is never closed')


def _addr_spec(spec: str) -> str:
    """The address between "<" and ">" (or alone): a protected "@" counts as one, any
    other protected character means a CSV value tried to add structure."""
    if not spec:
        raise AddressError('an empty address between "<" and ">"')
    spec = spec.replace(_PROTECTED_AT, "@")
    if _SHIFTED.search(spec):
        raise AddressError(
            f'"{reveal(spec)}" is not one email address: a value filled in from the CSV '
            "cannot add addresses or address syntax (, ; < > quotes); give each address "
            "its own column, e.g. {{ name }} <{{ email }}>, or mark a column that holds "
            "a whole list with {{ column | address_list }}"
        )
    if _plainly_valid(spec):
        return spec
    try:
        validate_email(spec, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise AddressError(f'"{spec}" is not a valid email address: {exc}') from exc
    return spec


# RFC 5322 dot-atom: what email_validator accepts before the @-sign without further checks.
_DOT_ATOM = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*")
_MAX_ADDRESS = 254  # octets (RFC 5321 4.5.3.1.3, as email_validator counts them)


def _plainly_valid(spec: str) -> bool:
    """The common address, told valid without the full check: a dot-atom before the @,
    an ASCII domain (no IDNA form whose Unicode length differs) that email_validator
    accepted before (its checks of the domain do not depend on the part before the @), and
    not too long. False sends the address to the full check, which gives the reason."""
    local, at, domain = spec.rpartition("@")
    return (
        bool(at)
        and len(spec) <= _MAX_ADDRESS
        and _DOT_ATOM.fullmatch(local) is not None
        and domain.isascii()
        and "xn--" not in domain.lower()
        and _valid_domain(domain)
    )


@functools.lru_cache(maxsize=256)
def _ascii_domain(domain: str) -> str | None:
    """A valid domain's lower-case IDNA form, or None."""
    try:
        valid = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    return valid.ascii_domain.lower()


@functools.lru_cache(maxsize=256)  # most lists have a handful of domains
def _valid_domain(domain: str) -> bool:
    try:
        validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True
