"""Messages the check before a run built, kept for the run, so that a row is built once
instead of twice.

`run` checks every row before the first byte goes to a server, then sends: without this,
every message would be rendered and composed in both passes. The check keeps the messages
it builds, in row order, up to ``BUDGET`` bytes in memory (a fixed ceiling, whatever the
number of recipients); the run takes them back in order, letting each go once it is handed
on, and builds only the rows past them.

Messages are kept without the attachments every row shares (``shared_parts``), so that
the budget holds thousands of messages with a 100 KB attachment, not a hundred or two.

The run stamps a kept message it sends with the time (``dated``: its Date header has the same
length whatever the time), so a message is dated when it is sent, not when checked.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from collections.abc import Iterator
from datetime import datetime

from batchmail.clock import email_date
from batchmail.outcomes import ComposedMessage
from batchmail.shared_parts import Squeezed, size_of

# What the kept messages may hold in memory, Python objects included; past it, the run
# builds the rest itself.
BUDGET = 16 << 20
Kept = ComposedMessage | Squeezed
_DATE = b"\r\nDate: "


class Prebuilt:
    """Built messages for the good rows from the first to ``last_row``, in row order."""

    def __init__(self, budget: int | None = None) -> None:
        self._budget = BUDGET if budget is None else budget
        self._size = 0
        self._messages: deque[Kept] = deque()
        self.last_row = 0  # every good row up to this one is kept
        self.full = False  # past the budget: no more are kept

    def wants_more(self) -> bool:
        return not self.full

    def keep(self, message: Kept) -> None:
        """Keep the next good row's message (rows come in order, none skipped)."""
        if self.full:
            return
        size = held_bytes(message)
        if self._size + size > self._budget:
            self.full = True
            return
        self._messages.append(message)
        self._size += size
        self.last_row = message.row_number

    def peek(self) -> Iterator[Kept]:
        """The kept messages from the first, in row order, left kept."""
        return iter(self._messages)

    def take(self) -> Iterator[Kept]:
        """The kept messages from the first, in row order, each let go as it is taken."""
        while self._messages:
            yield self._messages.popleft()


def held_bytes(item: Kept) -> int:
    """What keeping ``item`` costs: its own bytes and the objects that hold them. The bytes
    alone undercount a small message several times over (a 400-byte message is held in
    about 1,250), so a budget of bytes alone would let memory grow with the recipients."""
    message = item.message if isinstance(item, Squeezed) else item
    envelope = message.envelope
    objects: list[object] = [
        message,
        message.__dict__,
        message.key,
        message.message_id,
        envelope,
        envelope.__dict__,
        envelope.mail_from,
        envelope.rcpt_tos,
        *envelope.rcpt_tos,
        message.parts,
    ]
    if isinstance(item, Squeezed):
        objects += [item, item.pieces]
    # A part's header is counted here, its bytes by size_of (shared parts by neither).
    parts = item.pieces if isinstance(item, Squeezed) else message.parts
    headers = sum(sys.getsizeof(b"") for part in parts if isinstance(part, bytes))
    return size_of(item) + headers + sum(map(sys.getsizeof, objects))


def dated(message: Kept, moment: datetime) -> Kept:
    """The message with its Date header's value set to ``moment``."""
    pieces = message.pieces if isinstance(message, Squeezed) else message.parts
    head = pieces[0]  # the header block comes before any attachment
    if not isinstance(head, bytes):
        return message
    new_head = _dated(head, moment)
    if new_head is head:
        return message
    if isinstance(message, Squeezed):
        return dataclasses.replace(message, pieces=(new_head, *pieces[1:]))
    return dataclasses.replace(message, parts=(new_head, *message.parts[1:]))


def _dated(data: bytes, moment: datetime) -> bytes:
    value = email_date(moment).encode("ascii")
    header_end = data.find(b"\r\n\r\n")
    start = data.find(_DATE, 0, header_end) + len(_DATE)
    end = data.find(b"\r\n", start)
    if start < len(_DATE) or end - start != len(value):
        return data  # not the shape compose writes: left as built
    # A date has no line end and no leading dot: what the message says of its lines holds.
    return data[:start] + value + data[end:]
