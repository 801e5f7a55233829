"""Messages without the attachments every row shares, for carrying between processes and
keeping for the run.

A campaign's static attachments are encoded once, and every message holds a copy of their
bytes: 140 KB a row for a 100 KB PDF. A build worker handing such a message back pickled
and piped all of it, and the check before a run could keep only a few hundred of them
(``prebuilt``'s budget). ``SharedParts.squeeze`` cuts those bytes out of a message, leaving
the index of each; ``resolve`` (in the process that receives it) puts that process's own
copy back by reference, not by value, and ``expand`` joins the pieces into the message's
bytes once, when it is sent. The bytes are the same, byte for byte: ``expand`` of
``squeeze`` is the message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from batchmail.outcomes import ComposedMessage

# Smaller parts are left in place: cutting them out would save less than it costs.
MIN_SHARED = 4096
# Enough of a part to find where it may begin before comparing the whole of it.
_PROBE = 64


@dataclass(frozen=True, slots=True)
class Squeezed:
    """A message whose data is ``pieces`` joined: its own bytes, and shared parts (an
    index into the campaign's shared parts, or, once resolved, that part's bytes)."""

    message: ComposedMessage  # with empty data
    pieces: tuple[bytes | int, ...]
    size: int  # the message's own bytes: what it costs to keep or carry

    @property
    def row_number(self) -> int:
        return self.message.row_number

    @property
    def key(self) -> str:
        return self.message.key


class SharedParts:
    """The large parts every message of a campaign carries, as this process encoded them."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self._parts = tuple(parts)

    def squeeze(self, message: ComposedMessage) -> ComposedMessage | Squeezed:
        """The message with the shared parts cut out, or as it is when it has none."""
        data = message.data
        pieces: list[bytes | int] = []
        start = 0
        for index, part in enumerate(self._parts):
            if len(part) < MIN_SHARED:
                continue
            at = _find(data, part, start)
            if at < 0:
                continue  # not this message's (or not as the fast path writes it)
            pieces += [data[start:at], index]
            start = at + len(part)
        if not pieces:
            return message
        pieces.append(data[start:])
        size = sum(len(piece) for piece in pieces if isinstance(piece, bytes))
        return Squeezed(dataclasses.replace(message, data=b""), tuple(pieces), size)

    def resolve(self, squeezed: Squeezed) -> Squeezed:
        """The squeezed message with this process's shared parts in place of their indexes."""
        pieces = tuple(self._parts[p] if isinstance(p, int) else p for p in squeezed.pieces)
        return dataclasses.replace(squeezed, pieces=pieces)


def expand(item: ComposedMessage | Squeezed) -> ComposedMessage:
    """The whole message of a resolved squeezed one (a message as it is)."""
    if isinstance(item, ComposedMessage):
        return item
    if any(isinstance(piece, int) for piece in item.pieces):
        raise ValueError("a squeezed message must be resolved before it is expanded")
    return dataclasses.replace(item.message, data=b"".join(item.pieces))  # type: ignore[arg-type]


def size_of(item: ComposedMessage | Squeezed) -> int:
    """What the item holds of its own (shared parts not counted)."""
    return item.size if isinstance(item, Squeezed) else len(item.data)


def _find(data: bytes, part: bytes, start: int) -> int:
    """Where ``part`` is in ``data`` at or after ``start``, or -1; compared in place."""
    probe = part[:_PROBE]
    at = data.find(probe, start)
    while at >= 0 and not data.startswith(part, at):
        at = data.find(probe, at + 1)
    return at
