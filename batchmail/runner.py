"""The send loop: skip what the journal already has, send, record; retries, rate, sessions.

Durability order for every message (think SIGKILL at each line):
  1. the transport calls ``before_data`` once the server is ready for the data, and the
     journal marks the message in flight, durably, before the first byte of data goes out;
  2. the server replies;
  3. the outcome is journalled, durably.
A kill between 1 and 3 leaves the message ``unknown`` (it may have arrived), never pending,
so no later run sends it again unless the user asks with ``resend --include-unknown``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from batchmail.campaign import Campaign
from batchmail.check import MessageFactory
from batchmail.errors import RunAborted
from batchmail.journal import Journal, JournalEntry
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.recipients import read_recipients


class Transport(Protocol):
    """What the runner sends through: an SMTP session or the dry-run outbox."""

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None: ...

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome: ...

    def close(self) -> None: ...


class Progress(Protocol):
    """How the runner reports; the CLI draws a bar from it."""

    def start(self, total: int) -> None: ...

    def outcome(self, message: ComposedMessage, outcome: Outcome) -> None: ...

    def note(self, text: str) -> None: ...


Selector = Callable[[JournalEntry | None], bool]


def select_pending(entry: JournalEntry | None) -> bool:
    """`run`: only recipients the journal has never seen."""
    return entry is None


def select_resendable(include_unknown: bool) -> Selector:
    """`resend`: failed and deferred, and with include_unknown also unknown ones."""

    def select(entry: JournalEntry | None) -> bool:
        return entry is not None and entry.resendable(include_unknown)

    return select


@dataclass
class RunSummary:
    counts: Counter[str] = field(default_factory=Counter)  # this run's final outcomes
    selected: int = 0  # recipients this run set out to send
    skipped: int = 0  # recipients left alone (already done, or not selected)

    @property
    def attempted(self) -> int:
        return sum(self.counts.values())


@dataclass
class Runner:
    campaign: Campaign
    transport: Transport
    journal: Journal | None  # None for a dry run: nothing is recorded
    select: Selector = select_pending
    progress: Progress | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def run(self) -> RunSummary:
        factory = MessageFactory.prepare(self.campaign)
        summary = RunSummary()
        summary.selected = sum(1 for _ in self._selected())
        if self.progress:
            self.progress.start(summary.selected)
        pacer = _Pacer(self.campaign.send.rate, self.sleep, self.clock)
        in_session = 0
        try:
            for recipient in self._selected():
                message = factory.build(recipient, datetime.now(UTC))
                max_per_session = self.campaign.send.max_per_session
                if max_per_session and in_session >= max_per_session and self.transport.connected:
                    self.transport.close()
                if not self.transport.connected:
                    self._connect()
                    in_session = 0
                pacer.wait()
                outcome = self._deliver(message)
                in_session += 1
                summary.counts[outcome.status.value] += 1
                if self.progress:
                    self.progress.outcome(message, outcome)
        finally:
            self.transport.close()
        total = sum(1 for _ in read_recipients(self.campaign.recipients))
        summary.skipped = total - summary.selected
        return summary

    def _selected(self):  # type: ignore[no-untyped-def]
        for recipient in read_recipients(self.campaign.recipients):
            entry = self.journal.get(recipient.key) if self.journal else None
            if self.select(entry):
                yield recipient

    def _deliver(self, message: ComposedMessage) -> Outcome:
        """One message, with retries for transient failures; every outcome journalled."""
        retries = self.campaign.send.retries
        delay = self.campaign.send.retry_delay
        journal = self.journal

        def before_data() -> None:
            if journal is not None:
                journal.mark_in_flight(message)

        attempt = 0
        while True:
            if not self.transport.connected:
                self._connect()
            outcome = self.transport.send(message, before_data)
            if journal is not None:
                journal.record(message, outcome)
            if not (outcome.status is Status.DEFERRED and outcome.transient) or attempt >= retries:
                return outcome
            attempt += 1
            wait = delay * 2 ** (attempt - 1)
            if self.progress:
                self.progress.note(
                    f"row {message.row_number} ({message.key}): {_reply_text(outcome)}; "
                    f"retry {attempt} of {retries} in {wait:g}s"
                )
            self.sleep(wait)

    def _connect(self) -> None:
        """Connect, retrying an unreachable server with backoff; RunAborted when it stays so."""
        retries = self.campaign.send.retries
        delay = self.campaign.send.retry_delay
        for attempt in range(retries + 1):
            try:
                self.transport.connect()
                return
            except RunAborted as exc:
                if not getattr(exc, "transient", False) or attempt >= retries:
                    raise
                wait = delay * 2**attempt
                if self.progress:
                    self.progress.note(f"{exc}; trying again in {wait:g}s")
                self.sleep(wait)


def _reply_text(outcome: Outcome) -> str:
    return f"{outcome.code} {outcome.reply}".strip() if outcome.code else outcome.reply


class _Pacer:
    """At most ``rate`` messages per second; free when the rate is 0."""

    def __init__(self, rate: float, sleep: Callable[[float], None], clock: Callable[[], float]):
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._sleep = sleep
        self._clock = clock
        self._next = 0.0

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = max(self._next, now) + self._interval
