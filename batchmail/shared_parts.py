"""Messages without the attachments every row shares, for carrying between processes and
keeping for the run.

A campaign's static attachments are encoded once, and every message composed in a process
holds that process's bytes of them as parts of its own (``ComposedMessage.parts``), by
reference. Pickled, though, each message would carry a copy: 140 KB a row for a 100 KB PDF,
from a build worker to the parent. ``SharedParts.squeeze`` puts the index of each such part
in its place; ``resolve`` (in the process that receives it) puts that process's own bytes
back, by reference again, and ``expand`` makes it a message. The bytes are the same, byte
for byte: ``expand`` of ``resolve`` of ``squeeze`` is the message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from batchmail.outcomes import ComposedMessage

# Smaller parts are carried as they are: cutting them out would save less than it costs.
MIN_SHARED = 4096


@dataclass(frozen=True, slots=True)
class Squeezed:
    """A message whose parts are ``pieces``: its own bytes, and shared parts (an index into
    the campaign's shared parts, or, once resolved, that part's bytes)."""

    message: ComposedMessage  # with no parts
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
        # A message holds these very objects (see ComposedMessage.parts): found by identity.
        self._index = {id(p): i for i, p in enumerate(self._parts) if len(p) >= MIN_SHARED}

    def squeeze(self, message: ComposedMessage) -> ComposedMessage | Squeezed:
        """The message with the shared parts cut out, or as it is when it has none."""
        pieces = tuple(self._index.get(id(part), part) for part in message.parts)
        if all(isinstance(piece, bytes) for piece in pieces):
            return message
        size = sum(len(piece) for piece in pieces if isinstance(piece, bytes))
        return Squeezed(dataclasses.replace(message, parts=()), pieces, size)

    def resolve(self, squeezed: Squeezed) -> Squeezed:
        """The squeezed message with this process's shared parts in place of their indexes."""
        pieces = tuple(self._parts[p] if isinstance(p, int) else p for p in squeezed.pieces)
        return dataclasses.replace(squeezed, pieces=pieces)


def expand(item: ComposedMessage | Squeezed) -> ComposedMessage:
    """The message of a resolved squeezed one (a message as it is); nothing is copied."""
    if isinstance(item, ComposedMessage):
        return item
    parts = tuple(piece for piece in item.pieces if isinstance(piece, bytes))
    if len(parts) < len(item.pieces):
        raise ValueError("a squeezed message must be resolved before it is expanded")
    return dataclasses.replace(item.message, parts=parts)


def message_size(item: ComposedMessage | Squeezed) -> int:
    """The whole message's length in bytes (a squeezed one resolved: see ``resolve``)."""
    if isinstance(item, ComposedMessage):
        return item.size
    return sum(len(piece) for piece in item.pieces if isinstance(piece, bytes))


def size_of(item: ComposedMessage | Squeezed) -> int:
    """What the item holds of its own (shared parts not counted)."""
    return item.size
