"""A window of mail transactions pipelined on one connection (RFC 2920), and what became of
each message.

With CHUNKING (RFC 3030) transactions stream back to back: for each message [RSET,] MAIL,
every RCPT and ``BDAT <size> LAST`` followed by the data as is (no dot-stuffing), with at
most ``in_flight`` transactions unanswered; each group of them is announced to
``before_data`` before its first byte goes out, and more are sent as replies come (a sliding
window: the server never waits for us to hear a whole window back). Without CHUNKING, DATA
needs its 354 before the data, so each message costs one round trip: [RSET,] MAIL, RCPTs and
DATA in one write; then, after the 354 and ``before_data`` for that message alone, its
dot-stuffed data together with the next message's commands. Replies are matched to
transactions strictly in order. Once ``carry_on`` says no, no transaction starts (with BDAT,
no group of them): the replies to those started are heard, the rest never go.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from batchmail.outcomes import ComposedMessage, Outcome
from batchmail.smtp_envelope import END_OF_DATA, Transaction, payload
from batchmail.smtp_replies import ProtocolError, Reply, Sent, TransactionReplies
from batchmail.smtp_wire import Wire, WireLost
from batchmail.transport import Answered, BeforeData, CarryOn


@dataclass
class Entry:
    """One message of the window on its way."""

    message: ComposedMessage
    transaction: Transaction
    replies: TransactionReplies
    sent: Sent = Sent.NOTHING

    def mark(self, sent: Sent) -> None:
        self.sent = max(self.sent, sent)


@dataclass(frozen=True)
class WindowResult:
    outcomes: list[Outcome]  # one per transaction, in order
    usable: bool  # the connection can carry the next window


class Pipeline:
    """Sends one window over ``wire``; ``reset_first``: RSET before the first transaction
    (the connection has carried one before). Every later transaction starts with RSET."""

    def __init__(
        self,
        wire: Wire,
        *,
        chunking: bool,
        reset_first: bool,
        timeout: float,
        data_timeout: float,
        in_flight: int = 0,
    ) -> None:
        self._wire = wire
        self._chunking = chunking
        # BDAT transactions sent and not yet answered, at most (0: the whole window).
        self._in_flight = in_flight
        self._reset_first = reset_first
        self._timeout = timeout
        self._data_timeout = data_timeout
        # Whose reply comes next, one per reply, with where in the stream its command ends.
        self._awaiting: deque[tuple[Entry, int]] = deque()
        self._lost: str | None = None  # why the conversation ended before every reply came
        self._broken = False  # a reply said this connection should carry no more mail
        self._closing = False  # the server said 421: send nothing more, hear what it says
        self._carry_on: CarryOn | None = None
        self._stopped = False  # carry_on said no: no transaction starts any more

    def run(
        self,
        window: Sequence[tuple[ComposedMessage, Transaction]],
        before_data: BeforeData,
        answered: Answered | None = None,
        carry_on: CarryOn | None = None,
    ) -> WindowResult:
        self._carry_on = carry_on
        entries = [
            Entry(
                message,
                transaction,
                TransactionReplies(
                    transaction.given_rcpt_tos,
                    reset=self._reset_first or index > 0,
                    chunking=self._chunking,
                ),
            )
            for index, (message, transaction) in enumerate(window)
        ]
        if not entries:
            return WindowResult([], True)
        # A server that spoke out of turn (a reply too many, or a 421 and a close while we
        # were idle) would have its words taken for the replies to this window.
        problem = self._wire.unsolicited()
        if problem is not None:
            self._lost = problem
        elif self._chunking:
            self._send_chunked(entries, before_data, answered)
        else:
            self._send_with_data(entries, before_data, answered)
        # The first transaction counts as tried whatever happened: it pays for a connection
        # that broke at once, so that the runner's free retries of "never sent" messages
        # always make progress. Unless told to stop first: then there are no retries.
        if not self._stopped:
            entries[0].mark(Sent.COMMANDS)
        outcomes = [entry.replies.outcome(entry.sent, self._lost) for entry in entries]
        usable = self._lost is None and not any(e.replies.closes_session for e in entries)
        return WindowResult(outcomes, usable)

    # --- the two ways ---------------------------------------------------------------------

    def _send_chunked(
        self, entries: list[Entry], before_data: BeforeData, answered: Answered | None
    ) -> None:
        self._wire.source(self._chunked(entries, before_data, answered))
        self._exchange()

    def _chunked(
        self, entries: list[Entry], before_data: BeforeData, answered: Answered | None
    ) -> Iterator[bool]:
        """Queues one transaction per step, as the wire asks for more; True while the
        window is full (the next transaction waits for a reply)."""
        limit = self._in_flight or len(entries)
        group = max(1, limit // 4)  # announced to before_data together: one journal write
        done = 0  # entries, from the first, with every reply in
        reported = 0  # entries, from the first, handed to ``answered``
        for index, entry in enumerate(entries):
            while True:
                while done < index and entries[done].replies.answered:
                    done += 1
                if index - done < limit:
                    break
                yield True
            if index % group == 0:
                if not self._may_start():
                    return
                if answered is not None:
                    for finished in entries[reported:done]:
                        answered(finished.message, finished.replies.outcome(finished.sent))
                    reported = done
                before_data([e.message for e in entries[index : index + group]])
            self._envelope(entry)
            parts = payload(entry.message, chunking=True)
            self._command(entry, f"BDAT {sum(map(len, parts))} LAST", awaits=False)
            self._wire.data(parts, functools.partial(entry.mark, Sent.DATA))
            self._awaiting.append((entry, self._wire.queued))  # answered after the chunk
            yield False

    def _send_with_data(
        self, entries: list[Entry], before_data: BeforeData, answered: Answered | None
    ) -> None:
        if not self._may_start():
            return
        self._envelope(entries[0])
        self._command(entries[0], "DATA")
        self._exchange()
        for index, entry in enumerate(entries):
            if self._lost is not None or self._broken:
                return  # the rest never reached the server: the runner sends them again
            if self._stopped and entry.sent is Sent.NOTHING:
                return  # its commands never went: told to stop before
            if answered is not None and index > 0:
                # Every reply up to here was read, the previous message's verdict included.
                done = entries[index - 1]
                answered(done.message, done.replies.outcome(done.sent))
            if entry.replies.go_ahead:
                self._data(entry, before_data)
            if index + 1 < len(entries) and self._may_start():
                # RFC 2920: the commands may follow the end of the data in the same write.
                following = entries[index + 1]
                self._envelope(following)
                self._command(following, "DATA")
            self._exchange()

    def _data(self, entry: Entry, before_data: BeforeData) -> None:
        if entry.replies.wants_data:
            before_data([entry.message])
            parts = payload(entry.message, chunking=False)
            self._wire.data(parts, functools.partial(entry.mark, Sent.DATA), END_OF_DATA)
        else:
            # 354 although no recipient was accepted: an empty message ends it (RFC 2920 3.1).
            self._wire.command(".")
        entry.replies.expect_end()
        self._awaiting.append((entry, self._wire.queued))

    def _may_start(self) -> bool:
        """Whether another transaction may start: no, from the first time carry_on says so."""
        if not self._stopped and self._carry_on is not None and not self._carry_on():
            self._stopped = True
        return not self._stopped

    # --- the wire -------------------------------------------------------------------------

    def _envelope(self, entry: Entry) -> None:
        if entry.replies.reset:
            self._command(entry, "RSET")
        for line in entry.transaction.commands():
            self._command(entry, line, entry.transaction.command_encoding)

    def _command(
        self, entry: Entry, line: str, encoding: str = "ascii", *, awaits: bool = True
    ) -> None:
        self._wire.command(line, encoding, functools.partial(entry.mark, Sent.COMMANDS))
        if awaits:
            self._awaiting.append((entry, self._wire.queued))

    def _exchange(self) -> None:
        """Write what is queued and read every reply it asks for."""
        if self._lost is not None:
            return
        try:
            self._wire.pump(self._on_reply, self._answered, self._reply_timeout)
        except WireLost as exc:
            self._lost = str(exc)

    def _answered(self) -> bool:
        return self._lost is not None or not (self._awaiting or self._wire.pending)

    def _reply_timeout(self) -> float:
        waiting_for_verdict = self._awaiting and self._awaiting[0][0].replies.awaiting_final
        return self._data_timeout if waiting_for_verdict else self._timeout

    def _on_reply(self, reply: Reply) -> None:
        if self._lost is not None:
            return  # the replies lost track of the commands: what follows cannot be matched
        if not self._awaiting:
            raise ProtocolError(f"a reply nobody asked for: {reply.code} {reply.text}")
        entry, _ = self._awaiting.popleft()
        entry.replies.take(reply)
        self._broken |= entry.replies.closes_session
        if entry.replies.lost_track:
            self._lost = f"unexpected reply {reply.code} {reply.text}"
        elif entry.replies.said_421 and not self._closing:
            # The server is closing. Write nothing more; but what it answers until it has
            # closed is true (a server may go on with what was pipelined): keep reading.
            self._closing = True
            self._wire.halt()
            # Only what went out whole can be answered.
            written = self._wire.written
            self._awaiting = deque(item for item in self._awaiting if item[1] <= written)
