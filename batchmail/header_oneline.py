"""The one-line form of a header: what the email package writes for a short, simple
value, computed without it (its parser and folder cost most of a message's time).

A value qualifies when it is words separated by single spaces; ASCII words are printable
(in a display name: atext, so nothing is quoted); non-ASCII words are printable and,
in a display name, hold none of RFC 5322's specials; nothing looks like an encoded word;
the finished line fits in 78 characters. The email package then writes the ASCII words
as they are and the stretch from the first to the last non-ASCII word as one RFC 2047
encoded word (per display name), on one line: exactly this module's output, as the tests
show on generated values. Such a line also reads back as written by construction:
nothing in it is quoted or folded, and the one encoded word decodes to its text.
Anything else returns None and goes through the email package.
"""

from __future__ import annotations

import re

# The email package's own encoder, so that the choice between q and b and the q
# alphabet are its own. (mime_fast checks at start-up that the outputs still agree.)
from email import _encoded_words  # type: ignore[attr-defined]
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.policy import SMTP as POLICY
from functools import lru_cache
from typing import cast

from batchmail.addresses import Address

_MAX_LENGTH = 78  # the email package's max_line_length for policy.SMTP
_SPECIALS = frozenset('()<>@,:;.\\"[]')  # RFC 5322 specials: they would need quoting
_VCHAR_WORD = re.compile(r"[!-~]+")
_ATEXT_WORD = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = f"{_ATEXT}+(?:\\.{_ATEXT}+)*"
_ADDR_SPEC = re.compile(f"{_DOT_ATOM}@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)+")
_MSG_ID = re.compile(f"<{_DOT_ATOM}@{_DOT_ATOM}>")


@lru_cache(maxsize=64)  # asked twice per header: to write it, then to read it back
def one_line(name: str, value: str | tuple[Address, ...]) -> bytes | None:
    """``Name: value CRLF`` as the email package writes it (ASCII policy), or None when
    the value does not qualify (see the module docstring)."""
    if isinstance(value, str):
        if name.lower() == "message-id":
            text = value if _MSG_ID.fullmatch(value) else None
        elif _is_unstructured(name):
            text = _words(value, _VCHAR_WORD, frozenset())
        else:
            return None  # Date, MIME-Version...: parsed and rewritten by their classes
    else:
        text = _address_list(value)
    if text is None:
        return None
    line = f"{name}: {text}"
    if len(line) > _MAX_LENGTH:
        return None
    return line.encode("ascii") + b"\r\n"


@lru_cache(maxsize=256)
def _is_unstructured(name: str) -> bool:
    return issubclass(cast(HeaderRegistry, POLICY.header_factory)[name], UnstructuredHeader)


def _address_list(addresses: tuple[Address, ...]) -> str | None:
    if not addresses:
        return None  # the email package writes "To:" without the space
    items = []
    for address in addresses:
        if not _ADDR_SPEC.fullmatch(address.addr_spec):
            return None
        if not address.display_name:
            items.append(address.addr_spec)
            continue
        name = _words(address.display_name, _ATEXT_WORD, _SPECIALS)
        if name is None:
            return None
        items.append(f"{name} <{address.addr_spec}>")
    return ", ".join(items)


def _words(text: str, ascii_word: re.Pattern[str], specials: frozenset[str]) -> str | None:
    """``text`` as the email package writes it, or None if it does not qualify."""
    if "=?" in text:
        return None
    words = text.split(" ")
    first = last = -1
    for index, word in enumerate(words):
        if not word:
            return None  # a leading, trailing or repeated space
        if word.isascii():
            if not ascii_word.fullmatch(word):
                return None
            continue
        if not word.isprintable() or not specials.isdisjoint(word):
            return None
        for char in word:
            if char.isascii() and not ascii_word.fullmatch(char):
                return None
        first = index if first < 0 else first
        last = index
    if first < 0:
        return text
    encoded = _encoded_words.encode(" ".join(words[first : last + 1]), charset="utf-8")
    return " ".join([*words[:first], encoded, *words[last + 1 :]])
