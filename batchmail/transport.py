"""What the runner sends through: an SMTP session, or the dry-run outbox.

A transport takes a batch of messages and returns one ``Outcome`` per message, in order.
``before_data(messages)`` is called with the messages whose data is about to go out, before
the first byte of it does (the runner marks them in flight in the journal there); a
transport that pipelines calls it once per window, one that doesn't, once per message.
``answered(message, outcome)``, when given, is called as soon as a message's outcome is final,
before the next ``before_data``: the runner journals those outcomes in the same transaction as
the next in-flight mark, so a kill mid-batch leaves only the unanswered messages unknown.
``carry_on()``, when given, is asked before each transaction starts (with BDAT, before each
group of them announced to ``before_data``): once it says False the transport starts none,
hears the replies to those already started, and returns ``NEVER_SENT`` for the rest (a run
stopped by Ctrl-C finishes what is on the wire, and no more).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

from batchmail.outcomes import ComposedMessage, Outcome, Status

BeforeData = Callable[[Sequence[ComposedMessage]], None]
Answered = Callable[[ComposedMessage, Outcome], None]
CarryOn = Callable[[], bool]

NOT_SENT = "connection lost before the message was sent"
# A message whose turn never came: the connection went first.
NEVER_SENT = Outcome(Status.DEFERRED, None, NOT_SENT, transient=True, reached_server=False)


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def window(self) -> int:
        """How many messages it wants in one batch."""
        ...

    def connect(self) -> None: ...

    def send_batch(
        self,
        messages: Sequence[ComposedMessage],
        before_data: BeforeData,
        answered: Answered | None = None,
        carry_on: CarryOn | None = None,
    ) -> list[Outcome]: ...

    def close(self) -> None: ...


class SendsOneByOne(Protocol):
    @property
    def connected(self) -> bool: ...

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome: ...


def send_one_by_one(
    transport: SendsOneByOne,
    messages: Sequence[ComposedMessage],
    before_data: BeforeData,
    answered: Answered | None = None,
    carry_on: CarryOn | None = None,
) -> list[Outcome]:
    """A batch as consecutive single transactions. Once the connection is lost (or
    ``carry_on`` says no), the rest of the batch never reached the server, for the runner
    to send again."""
    outcomes: list[Outcome] = []
    stopped = False
    for message in messages:
        stopped = stopped or (carry_on is not None and not carry_on())
        if stopped or not transport.connected:
            outcomes.append(NEVER_SENT)
            continue
        outcome = transport.send(message, functools.partial(before_data, (message,)))
        outcomes.append(outcome)
        if answered is not None:
            answered(message, outcome)
    return outcomes
