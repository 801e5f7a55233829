"""The shared vocabulary of what happened to one message."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    SENT = "sent"  # the server answered 2xx to the end of data
    FAILED = "failed"  # permanent (5xx): retrying will not help
    DEFERRED = "deferred"  # transient (4xx, or the connection failed before the data went out)
    UNKNOWN = "unknown"  # the data went out but no reply came: it may have arrived


@dataclass(frozen=True)
class RecipientRefusal:
    """One envelope recipient the server refused while accepting others."""

    address: str
    code: int
    reply: str


@dataclass(frozen=True)
class Outcome:
    """The result of handing one message to a transport.

    ``code``/``reply`` are the server's last relevant reply (None/"" when there was
    none, e.g. a dropped connection). ``refused`` lists envelope recipients the
    server refused individually; the message still went to the others when
    ``status`` is SENT.
    """

    status: Status
    code: int | None
    reply: str
    refused: tuple[RecipientRefusal, ...] = ()
    # True when a retry within this run may succeed (4xx, connection failure before data).
    transient: bool = False
    # False when not a byte of the message's transaction left for the server (the connection
    # went before its turn): it was never attempted, and stays pending.
    reached_server: bool = True
    # True when the server closed the session (421) at RSET or MAIL, before this message's
    # recipients were named: a verdict on the session, not on the message (see the runner).
    session_closed: bool = False
    # The envelope recipients that have the message now (their RCPT and the data accepted),
    # when the row's status does not say it went to all of them: see row_outcome.
    accepted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Envelope:
    """What goes into MAIL FROM and RCPT TO; never derived from re-parsing headers."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    # Those of rcpt_tos the template put in `to`: the row's own people, whose replies decide
    # its status (Cc and Bcc refusals are shown, not counted). Empty: every recipient.
    to: tuple[str, ...] = ()

    @property
    def own(self) -> tuple[str, ...]:
        return self.to or self.rcpt_tos


@dataclass(frozen=True)
class ComposedMessage:
    """One recipient's message, ready for a transport: the bytes are exactly what is sent."""

    row_number: int  # 1-based data row in the CSV (the header line is not counted)
    key: str  # the value of the campaign's key column
    envelope: Envelope
    message_id: str  # with angle brackets, as in the header
    # The RFC 5322 message (no Bcc header), in order: joined, ``data``. An attachment is a
    # part of its own, and one every row shares is the same bytes object in every message,
    # never a copy: a run holds it once, and a transport can send it without joining.
    parts: tuple[bytes, ...]
    # What the composer verified, so that a transport need not scan a large message again:
    # every line end is CRLF and the data ends with one; and whether a line may begin with
    # a dot (which DATA must double). The defaults promise nothing.
    crlf_only: bool = False
    dot_lines: bool = True

    def __post_init__(self) -> None:
        # The whole message as one bytes object (as ``data`` once was) is its only part.
        if isinstance(self.parts, bytes | bytearray | memoryview):
            object.__setattr__(self, "parts", (bytes(self.parts),))

    @property
    def data(self) -> bytes:
        """The whole message: a copy of every part (transports that send it use ``parts``)."""
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    @property
    def size(self) -> int:
        """The message's length in bytes."""
        return sum(map(len, self.parts))

    @property
    def is_ascii(self) -> bool:
        return all(part.isascii() for part in self.parts)
