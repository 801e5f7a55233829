"""RFC 2047 encoded words, written here rather than by the email package, whose folder
changes what some values mean (it drops the space beside an encoded word, among others).

A field is written as pieces separated by single spaces; a line is folded only at such a
space (CRLF SP, which a reader unfolds back to the space). A piece is plain (ASCII written
as it is) or a stretch of text written as encoded words. Readers ignore the white space
between two adjacent encoded words (RFC 2047 6.2), so every space of a stretch travels
inside its encoded words, and the stretches of a value are never adjacent: a space beside
a plain word is an ordinary space, kept by readers.

- An encoded word is ``=?utf-8?q?...?=`` or ``=?utf-8?b?...?=`` (the shorter for the
  stretch), at most 75 characters (RFC 2047 2), holding whole characters, and whole
  grapheme clusters where one fits (a base with its combining marks, an emoji ZWJ
  sequence, a flag); a line is at most 78 characters unless a single plain piece is longer.
- Q uses the alphabet RFC 2047 5(3) allows in a phrase (letters, digits, ``!*+-/``, ``_``
  for a space) everywhere, so one encoder serves Subject and display names.
- Unstructured text (Subject, extra headers): an ASCII word stays plain unless it looks
  like part of an encoded word (``=?``, ``?=``), is too long for a line, or touches a
  space that is not a single separator (leading, trailing, repeated spaces go into
  encoded words, where they are kept).
- A display name stays plain if it is atoms separated by single spaces, is a
  quoted-string if it is other printable ASCII, else atoms and stretches
  as above, each stretch one encoded word. In a name, the email package keeps the space
  between two adjacent encoded words (RFC 2047 6.2 drops it) and reads a run of blanks
  inside one as a single space, so no encoding of a longer stretch, or of one with
  repeated spaces, reads back the same everywhere: ``phrase_problem`` refuses those.

The output is ASCII but for an addr-spec with a non-ASCII local part, written as it is:
such a message goes out with SMTPUTF8, where raw UTF-8 headers are allowed (RFC 6532);
its text is still written as encoded words, which RFC 6532 readers decode too.
"""

from __future__ import annotations

import re
import unicodedata
from base64 import b64encode

from batchmail.addresses import Address

MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD
MAX_WORD = 75  # RFC 2047 2
# A name's stretch is one encoded word, never folded: this long, it fits the first line of
# every address header batchmail writes ("Reply-To: " is the longest name).
MAX_NAME_WORD = MAX_LINE - len("Reply-To: ")
_OVERHEAD = len("=?utf-8?q??=")
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = {byte: chr(byte) if byte in _Q_SAFE else f"={byte:02X}" for byte in range(256)}
_Q_BYTE[0x20] = "_"
_VCHAR_WORD = re.compile(r"[!-~]+")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_QTEXT = re.compile(r"[ -~]+")
# What the email package reads as one space inside an encoded word of a name: a space or
# tab and every blank after it (str.lstrip() blanks, U+00A0 and U+3000 included).
_BLANK_RUN = re.compile(r"[ \t]\s")
_SINGLE_SPACE = re.compile(r"(?<=[^ ]) (?=[^ ])")
_LOOKS_ENCODED = re.compile(r"=\?|\?=")
_ZWJ = "\u200d"

Piece = tuple[bool, str]  # (encoded, text)


def unstructured_field(name: str, text: str) -> str:
    """``Name: text`` folded, CRLF-terminated, ASCII only."""
    return _pack(name, _text_pieces(name, text))


def address_field(name: str, addresses: tuple[Address, ...]) -> str:
    """``Name: a, b, ...`` folded, CRLF-terminated; the addr-specs as they are, every
    display name one that ``phrase_problem`` passes (else ValueError)."""
    pieces: list[Piece] = []
    for number, address in enumerate(addresses):
        if address.display_name:
            words, trouble = _phrase_words(address.display_name)
            if trouble:
                raise ValueError(trouble)
            pieces.extend((False, word) for word in words)
            spec = f"<{address.addr_spec}>"
        else:
            spec = address.addr_spec
        pieces.append((False, spec + ("," if number < len(addresses) - 1 else "")))
    return _pack(name, pieces)


def phrase_problem(display_name: str) -> str | None:
    """Why ``display_name`` cannot be written so that every reader reads it back exactly,
    or None. Readers disagree on the space between two encoded words in a name (RFC 2047
    6.2 drops it, the email package keeps it) and the email package reads a run of spaces
    inside one as a single space, so each stretch of non-ASCII text must fit one encoded
    word, with no repeated spaces."""
    _, trouble = _phrase_words(display_name)
    return trouble


def _text_pieces(name: str, text: str) -> list[Piece]:
    words = text.split(" ")
    plain = [_is_plain_word(word) for word in words]
    plain[0] = plain[0] and len(name) + 2 + len(words[0]) <= MAX_LINE
    return _runs(words, plain)


def _runs(words: list[str], plain: list[bool]) -> list[Piece]:
    """The words as pieces: each plain word alone, the other words joined into stretches.
    A space that is not a single separator between two words (leading, trailing,
    repeated) makes its neighbours part of a stretch, where it is kept."""
    for index, word in enumerate(words):
        if not word:
            plain[max(index - 1, 0)] = False
            if index + 1 < len(words):
                plain[index + 1] = False
    pieces: list[Piece] = []
    run: list[str] = []
    for word, is_plain in zip(words, plain, strict=True):
        if not is_plain:
            run.append(word)
            continue
        if run:
            pieces.append((True, " ".join(run)))
            run = []
        pieces.append((False, word))
    if run:
        pieces.append((True, " ".join(run)))
    return pieces


def _is_plain_word(word: str) -> bool:
    return (
        0 < len(word) < MAX_LINE - 1
        and _VCHAR_WORD.fullmatch(word) is not None
        and _LOOKS_ENCODED.search(word) is None
    )


def _phrase_words(name: str) -> tuple[list[str], str | None]:
    """The words of a display name as written (atoms, one quoted-string, or atoms and
    single encoded words), and what makes it impossible to write exactly, if anything."""
    words = name.split(" ")
    if _LOOKS_ENCODED.search(name) is None:
        if all(_ATOM.fullmatch(word) for word in words):
            return words, None
        if _QTEXT.fullmatch(name):
            # Folded only at a single space between two words: unfolding restores it.
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return _SINGLE_SPACE.split(quoted), None
    written: list[str] = []
    for encoded, text in _runs(words, [_is_atom(word) for word in words]):
        if not encoded:
            written.append(text)
            continue
        if _BLANK_RUN.search(text):
            return written, (
                f"the name {name!r} has a space followed by another blank in non-ASCII "
                "text, which mail readers would read as one space; use single spaces"
            )
        word = _one_word(text)
        if len(word) > MAX_NAME_WORD:
            return written, (
                f"the name {name!r} has too much text between its plain ASCII words to "
                "encode exactly: mail readers join encoded words in a name differently "
                "(RFC 2047 6.2); shorten it"
            )
        written.append(word)
    return written, None


def _is_atom(word: str) -> bool:
    return _ATOM.fullmatch(word) is not None and _LOOKS_ENCODED.search(word) is None


def _one_word(text: str) -> str:
    data = text.encode("utf-8")
    q_text = "".join(_Q_BYTE[byte] for byte in data)
    if 4 * -(-len(data) // 3) < len(q_text):
        return "=?utf-8?b?" + b64encode(data).decode("ascii") + "?="
    return "=?utf-8?q?" + q_text + "?="


def _pack(name: str, pieces: list[Piece]) -> str:
    """The field's lines: each piece after a space, which becomes a fold where the line
    would grow past MAX_LINE (never before the first piece)."""
    lines = _Lines(name)
    for encoded, text in pieces:
        if encoded:
            _add_encoded(lines, text)
        else:
            if not lines.empty and lines.room() < len(text):
                lines.fold()
            lines.add(text)
    return lines.finished()


class _Lines:
    """The lines of one field as they are written."""

    def __init__(self, name: str) -> None:
        self.done: list[str] = []
        self.line = name + ":"
        self.empty = True  # nothing after the colon yet: no fold allowed

    def room(self) -> int:
        """Characters that still fit on the current line after a separating space."""
        return MAX_LINE - len(self.line) - 1

    def add(self, word: str) -> None:
        self.line += " " + word
        self.empty = False

    def fold(self) -> None:
        self.done.append(self.line)
        self.line = ""

    def finished(self) -> str:
        if self.empty:
            self.line += " "  # an empty value: "Name: ", as the email package reads it
        return "\r\n".join([*self.done, self.line]) + "\r\n"


def _add_encoded(lines: _Lines, text: str) -> None:
    """``text`` as encoded words, each as long as its line's room allows."""
    clusters = _clusters(text)
    data = text.encode("utf-8")
    use_b = 4 * -(-len(data) // 3) < sum(len(_Q_BYTE[byte]) for byte in data)
    start = 0
    while start < len(clusters):
        end = _fit(clusters, start, min(MAX_WORD, lines.room()) - _OVERHEAD, use_b)
        if end == start and not lines.empty:
            lines.fold()
            continue
        end = max(end, start + 1)  # a header name too long to leave room: the line grows
        chunk = "".join(clusters[start:end]).encode("utf-8")
        if use_b:
            lines.add("=?utf-8?b?" + b64encode(chunk).decode("ascii") + "?=")
        else:
            lines.add("=?utf-8?q?" + "".join(_Q_BYTE[byte] for byte in chunk) + "?=")
        start = end


def _fit(clusters: list[str], start: int, space: int, use_b: bool) -> int:
    """The end of the longest run of clusters from ``start`` whose encoding fits ``space``."""
    size = 0
    end = start
    while end < len(clusters):
        cluster = clusters[end]
        data = cluster.encode("utf-8")
        if use_b:
            grown = size + len(data)
            if 4 * -(-grown // 3) > space:
                break
            size = grown
        else:
            cost = sum(len(_Q_BYTE[byte]) for byte in data)
            if size + cost > space:
                break
            size += cost
        end += 1
    return end


def _clusters(text: str) -> list[str]:
    """``text`` cut between grapheme clusters (an approximation of UAX 29 that covers
    combining marks, ZWJ sequences, variation selectors, skin tones, tags and flags);
    a cluster too long for one encoded word is cut between its code points."""
    clusters: list[str] = []
    for char in text:
        if clusters and _extends(clusters[-1], char):
            clusters[-1] += char
        else:
            clusters.append(char)
    if all(len(cluster) <= 5 for cluster in clusters):  # 20 bytes at most: fits any word
        return clusters
    return [part for cluster in clusters for part in _short(cluster)]


def _extends(cluster: str, char: str) -> bool:
    code = ord(char)
    if code < 0x300:
        return False  # the common case: nothing below U+0300 joins what precedes it
    if cluster[-1] == _ZWJ or char == _ZWJ or unicodedata.category(char) in ("Mn", "Me", "Mc"):
        return True
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:  # variation selectors
        return True
    if 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:  # skin tones, tags
        return True
    # Regional indicators pair up into flags.
    return _is_regional(char) and len(cluster) == 1 and _is_regional(cluster)


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _short(cluster: str) -> list[str]:
    """A cluster that fits one encoded word whatever the encoding, else its code points."""
    return [cluster] if len(cluster.encode("utf-8")) * 3 <= MAX_WORD - _OVERHEAD else list(cluster)
