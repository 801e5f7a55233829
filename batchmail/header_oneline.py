"""The one-line form of a short, simple ASCII header: what ``rfc2047`` and the email
package both write for it, computed with neither (their work costs most of a message's
time when done for every header of every row).

A value qualifies when it is printable ASCII words separated by single spaces (in a
display name: atext, so nothing is quoted), nothing looks like part of an encoded word
(``=?``, ``?=``), and the finished line fits in 78 characters. Both writers then put the
value on one line as it is: exactly this module's output, as the tests show on generated
values. Such a line also reads back as written by construction: nothing in it is quoted,
encoded or folded. Anything else returns None.
"""

from __future__ import annotations

import re
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.policy import SMTP as POLICY
from functools import lru_cache
from typing import cast

from batchmail.addresses import Address

_MAX_LENGTH = 78  # the email package's max_line_length for policy.SMTP
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
        elif is_unstructured(name):
            text = _words(value, _VCHAR_WORD)
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
def is_unstructured(name: str) -> bool:
    """Whether the email package reads a header of this name as unstructured text."""
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
        if _words(address.display_name, _ATEXT_WORD) is None:
            return None
        items.append(f"{address.display_name} <{address.addr_spec}>")
    return ", ".join(items)


def _words(text: str, ascii_word: re.Pattern[str]) -> str | None:
    """``text`` if it qualifies (see the module docstring), else None."""
    if "=?" in text or "?=" in text:
        return None
    for word in text.split(" "):
        if not ascii_word.fullmatch(word):
            return None  # empty (a leading, trailing or repeated space) or not plain
    return text
