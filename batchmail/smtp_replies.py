"""SMTP replies and what they mean for one mail transaction: pure logic, no sockets.

``ReplyReader`` turns received bytes into ``Reply`` values. ``TransactionReplies`` takes one
transaction's replies in the order its commands went out ([RSET], MAIL, each RCPT, then DATA
and the reply to the end of the data, or BDAT) and says what became of the message, also
when the conversation ended before every reply came.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from enum import IntEnum

from batchmail.outcomes import Outcome, RecipientRefusal, Status
from batchmail.transport import NOT_SENT

LOST_BEFORE_DATA = "connection lost before the message was sent"
LOST_AFTER_DATA = "connection lost after the message data was sent; it may have been delivered"
MAX_LINE = 8192  # as smtplib: a longer "reply" is not SMTP


class ProtocolError(Exception):
    """The server sent something that is not the reply expected next."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, after the code and separator

    @property
    def text(self) -> str:
        """All lines' text on one line, as ``SmtpSession`` reports replies."""
        return " ".join(self.lines)

    def wire_lines(self) -> list[str]:
        """The reply as it was sent, one string per line (for the debug log)."""
        last = len(self.lines) - 1
        return [f"{self.code}{'-' if i < last else ' '}{line}" for i, line in enumerate(self.lines)]


class ReplyReader:
    """Collects received bytes and hands out complete (possibly multiline) replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []  # of the reply being read

    @property
    def pending(self) -> bool:
        """Part of a reply has come, not all of it."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        if len(self._buffer) > MAX_LINE:
            raise ProtocolError(f"a reply line longer than {MAX_LINE} bytes")
        return replies

    def _line(self, line: bytes) -> Reply | None:
        code, separator = line[:3], line[3:4]
        if (
            len(line) > MAX_LINE
            or not code.isdigit()
            or separator not in (b"-", b" ", b"\r", b"\n")
        ):
            raise ProtocolError(f"not an SMTP reply: {line[:80]!r}")
        # smtplib's way, so that both paths report the same text.
        self._lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "replace"))
        if separator == b"-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(int(code), lines)


class Sent(IntEnum):
    """How much of a transaction left this client."""

    NOTHING = 0
    COMMANDS = 1  # some or all of its commands, not (all of) its data
    DATA = 2  # all of its data: the server may have the message


class TransactionReplies:
    """One transaction's replies, in order, and the outcome they add up to."""

    def __init__(self, rcpt_tos: tuple[str, ...], *, reset: bool, chunking: bool) -> None:
        self._rcpt_tos = rcpt_tos  # as given, for RecipientRefusal
        self.reset = reset  # the transaction starts with RSET
        kinds = ["RSET"] if reset else []
        kinds += ["MAIL", *(["RCPT"] * len(rcpt_tos)), "BDAT" if chunking else "DATA"]
        self._expected: deque[str] = deque(kinds)
        self._rset: Reply | None = None
        self._mail: Reply | None = None
        self._rcpt_replies: list[Reply] = []
        self._data: Reply | None = None  # the reply to DATA (354 to go ahead)
        self._final: Reply | None = None  # to the end of the data, or to BDAT ... LAST
        self._end_expected = False
        self._said_421 = False  # to any command of the transaction (asked after every reply)

    # --- taking replies -----------------------------------------------------------------

    @property
    def answered(self) -> bool:
        """Every reply to what was sent so far is in."""
        return not self._expected

    @property
    def awaiting_final(self) -> bool:
        """The next reply is the one to the message data (the long wait of RFC 5321)."""
        return bool(self._expected) and self._expected[0] in ("BDAT", "END")

    def take(self, reply: Reply) -> None:
        if not self._expected:
            raise ProtocolError(f"a reply nobody asked for: {reply.code} {reply.text}")
        kind = self._expected.popleft()
        self._said_421 |= reply.code == 421
        final = kind in ("BDAT", "END")
        if not final and not (_verdict(reply) or (kind == "DATA" and reply.code == 354)):
            raise ProtocolError(f"the server answered {kind} with {reply.code} {reply.text}")
        if kind == "RSET":
            self._rset = reply
        elif kind == "MAIL":
            self._mail = reply
        elif kind == "RCPT":
            self._rcpt_replies.append(reply)
        elif kind == "DATA":
            self._data = reply
        else:
            self._final = reply

    @property
    def go_ahead(self) -> bool:
        """DATA was answered 354: the server now reads data until CRLF.CRLF."""
        return self._data is not None and self._data.code == 354 and not self._end_expected

    @property
    def wants_data(self) -> bool:
        """The envelope was accepted: the message data may follow (else, after a 354, only
        the lone dot that ends an empty message: RFC 2920 3.1)."""
        return self._accepted() and self._decided() is None

    def expect_end(self) -> None:
        """The data (or a lone dot) went out after a 354: its reply comes next."""
        self._end_expected = True
        self._expected.append("END")

    @property
    def closes_session(self) -> bool:
        """After these replies the connection is unusable: the server said 421, or it refused
        RSET, or it answered the data with something that is not a verdict."""
        if self._said_421:
            return True
        if self._rset is not None and not 200 <= self._rset.code < 300:
            return True
        return self.lost_track

    @property
    def lost_track(self) -> bool:
        """The data was answered with something that is not a verdict: the replies that
        follow cannot be matched with any confidence."""
        return self._final is not None and not _verdict(self._final)

    @property
    def said_421(self) -> bool:
        return self._said_421

    # --- the outcome --------------------------------------------------------------------

    def outcome(self, sent: Sent, lost: str | None = None) -> Outcome:
        """What became of the message, given how much of it went out and, when the
        conversation ended before every reply came, why (``lost``: "connection reset")."""
        if self._rset is not None and self._rset.code == 421:
            return replace(_refusal(self._rset), session_closed=True)
        decided = self._decided()
        if decided is not None:
            return decided
        refused = self._refused()
        final = self._final
        if final is not None and 200 <= final.code < 300:
            return Outcome(Status.SENT, final.code, final.text, refused)
        if self._rset is not None and not 200 <= self._rset.code < 300:
            # A server that cannot reset may have mixed this envelope with the last one.
            return Outcome(
                Status.DEFERRED, self._rset.code, f"RSET refused: {self._rset.text}", (), True
            )
        if final is not None:
            if 400 <= final.code < 600:
                return _refusal(final, refused)
            return Outcome(
                Status.UNKNOWN,
                None,
                f"unexpected reply to the message data ({final.code} {final.text}); "
                "it may have been delivered",
                refused,
            )
        if self._data is not None and self._data.code != 354:
            return _refusal(self._data, refused)
        return _unanswered(sent, lost or "no reply", refused)

    def _accepted(self) -> bool:
        return any(200 <= r.code < 300 for r in self._rcpt_replies)

    def _refused(self) -> tuple[RecipientRefusal, ...]:
        return tuple(
            RecipientRefusal(address, reply.code, reply.text)
            for address, reply in zip(self._rcpt_tos, self._rcpt_replies, strict=False)
            if not 200 <= reply.code < 300
        )

    def _decided(self) -> Outcome | None:
        """The outcome fixed before the data counts: MAIL refused, 421 to a RCPT, or every
        RCPT answered and none accepted (then the reply to DATA/BDAT does not matter)."""
        if self._mail is not None and not 200 <= self._mail.code < 300:
            return replace(_refusal(self._mail), session_closed=self._mail.code == 421)
        refused: list[RecipientRefusal] = []
        for address, reply in zip(self._rcpt_tos, self._rcpt_replies, strict=False):
            if reply.code == 421:
                return _refusal(reply, tuple(refused))
            if not 200 <= reply.code < 300:
                refused.append(RecipientRefusal(address, reply.code, reply.text))
        if len(self._rcpt_replies) == len(self._rcpt_tos) and not self._accepted():
            return all_refused(tuple(refused))
        return None


def _verdict(reply: Reply) -> bool:
    """2xx, 4xx or 5xx: an answer to a command, not a request for more (3xx) or nonsense."""
    return 200 <= reply.code < 300 or 400 <= reply.code < 600


def all_refused(refused: tuple[RecipientRefusal, ...]) -> Outcome:
    """No recipient accepted: FAILED when every refusal is permanent, else DEFERRED with the
    first transient refusal's reply (a retry may reach those recipients)."""
    transient = [r for r in refused if not 500 <= r.code < 600]
    if not transient:
        return Outcome(Status.FAILED, refused[0].code, refused[0].reply, refused)
    return Outcome(Status.DEFERRED, transient[0].code, transient[0].reply, refused, transient=True)


def _refusal(reply: Reply, refused: tuple[RecipientRefusal, ...] = ()) -> Outcome:
    if 500 <= reply.code < 600:
        return Outcome(Status.FAILED, reply.code, reply.text, refused)
    return Outcome(Status.DEFERRED, reply.code, reply.text, refused, transient=True)


def _unanswered(sent: Sent, reason: str, refused: tuple[RecipientRefusal, ...]) -> Outcome:
    """No verdict came for this transaction. Even after a 421 to an earlier one: a server
    may well have gone on with what was pipelined before it closed."""
    if sent is Sent.NOTHING:
        return Outcome(
            Status.DEFERRED, None, NOT_SENT, refused, transient=True, reached_server=False
        )
    if sent is Sent.DATA:
        return Outcome(Status.UNKNOWN, None, f"{LOST_AFTER_DATA} ({reason})", refused)
    return Outcome(Status.DEFERRED, None, f"{LOST_BEFORE_DATA}: {reason}", refused, True)
