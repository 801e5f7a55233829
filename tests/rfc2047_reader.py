"""A second reader of header fields, written from RFC 2047 and RFC 5322 alone, to check
batchmail's encoded words against something other than Python's email package.

Why not the email package's legacy ``decode_header``/``make_header``: it joins decoded
chunks with its own spacing rules (it adds a space between an encoded and a plain chunk
unless one is already there), so it cannot tell whether the spaces on the wire were
right. This reader does only what the RFCs say: unfold (RFC 5322 2.2.3: remove each CRLF
before a space or tab); in unstructured text keep every character, except that the white
space between two adjacent encoded words is dropped (RFC 2047 6.2); in an address list
read display names as words (atoms, quoted-strings, encoded words) separated by single
spaces, with again nothing between two adjacent encoded words. An encoded word counts
only as a whole white-space-delimited token (RFC 2047 5), in UTF-8, Q or B, decoded
strictly (a malformed word fails the test instead of being guessed at).
"""

from __future__ import annotations

import base64
import binascii
import re

ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_Q_ESCAPE = re.compile(r"=([0-9A-F]{2})")


def unfold(field: bytes) -> tuple[str, str]:
    """(name, value) of one field: unfolded, the value without the blanks after the colon."""
    text = field.decode("utf-8")
    assert text.endswith("\r\n"), field
    text = re.sub(r"\r\n(?=[ \t])", "", text[:-2])
    assert "\r" not in text and "\n" not in text, field
    name, colon, value = text.partition(":")
    assert colon, field
    return name, value.lstrip(" \t")


def decode_word(word: str) -> str:
    """One encoded word's text; AssertionError unless it is well-formed UTF-8 Q or B."""
    match = ENCODED_WORD.fullmatch(word)
    assert match, word
    charset, encoding, text = match.groups()
    assert charset.lower() == "utf-8", word
    if encoding in "bB":
        try:
            data = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise AssertionError(word) from exc
    else:
        assert re.fullmatch(r"(?:[A-Za-z0-9!*+\-/_]|=[0-9A-F]{2})*", text), word
        data = _Q_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text.replace("_", " ")).encode(
            "latin-1"
        )
    return data.decode("utf-8")  # strict: a word holds whole characters (RFC 2047 5)


def unstructured(value: str) -> str:
    """The text of an unfolded unstructured value."""
    tokens = re.findall(r"[ \t]+|[^ \t]+", value)
    out: list[str] = []
    for index, token in enumerate(tokens):
        if token[0] in " \t":
            between_words = 0 < index < len(tokens) - 1 and all(
                ENCODED_WORD.fullmatch(tokens[i]) for i in (index - 1, index + 1)
            )
            out.append("" if between_words else token)
        elif ENCODED_WORD.fullmatch(token):
            out.append(decode_word(token))
        else:
            out.append(token)
    return "".join(out)


_ADDRESS_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(<[^<>]*>)|(,)|([^\s"<>,]+))')


def address_list(value: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) of each address of an unfolded address-list value, for the
    forms batchmail writes: ``addr-spec`` alone or ``phrase <addr-spec>``."""
    found: list[tuple[str, str]] = []
    words: list[tuple[str, bool]] = []  # (text, was an encoded word)
    position = 0
    value = value.rstrip(" \t")
    while position < len(value):
        match = _ADDRESS_TOKEN.match(value, position)
        assert match and match.end() > position, value[position:]
        position = match.end()
        quoted, angle, comma, word = match.groups()
        if quoted:
            words.append((re.sub(r"\\(.)", r"\1", quoted[1:-1]), False))
        elif angle:
            found.append((_phrase(words), angle[1:-1]))
            words = []
        elif comma:
            if words:  # an addr-spec alone
                assert len(words) == 1, words
                found.append(("", words[0][0]))
                words = []
        else:
            encoded = ENCODED_WORD.fullmatch(word) is not None
            words.append((decode_word(word) if encoded else word, encoded))
    if words:
        assert len(words) == 1, words
        found.append(("", words[0][0]))
    return found


def _phrase(words: list[tuple[str, bool]]) -> str:
    text = ""
    for index, (word, encoded) in enumerate(words):
        if index and not (encoded and words[index - 1][1]):
            text += " "
        text += word
    return text
