"""The send loop: skip what the journal already has, send in batches, record; retries, rate,
fresh sessions, parallel sessions.

Durability order for every message (think SIGKILL at each line):
  1. the transport calls ``before_data`` when the server is ready for the data, and the
     journal marks the messages in flight, committed, before the first byte of data goes out
     (on disk too: synced, or covered by the synced reservation of the batch; see journal);
  2. the server replies;
  3. the outcomes are journalled, committed (on disk by the next synced write).
A kill between 1 and 3 leaves the message ``unknown`` (it may have arrived), never pending,
so no later run sends it again unless the user asks with ``resend --include-unknown``.

A stop requested by Ctrl-C or SIGTERM (``stop``) hands out no more messages and no retries;
the transports start no new transaction and finish those started, whose outcomes are
journalled as always; the messages that never went stay pending. See ``batchmail.stop``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from batchmail import clock
from batchmail.build_pool import Built, build_all
from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, RunAborted
from batchmail.journal import Journal, JournalEntry, with_entries
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.prebuilt import Kept, Prebuilt, dated
from batchmail.ratelimit import TokenBucket
from batchmail.recipients import Recipient, read_recipients
from batchmail.row_outcome import for_row, still_to_reach
from batchmail.shared_parts import expand
from batchmail.stop import StopRequest
from batchmail.suppression import is_suppressed, load_exclusions
from batchmail.transport import Transport


class Progress(Protocol):
    """How the runner reports; the CLI draws a bar from it. Called from one thread at a time."""

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
    suppressed: int = 0  # of those, left out because an exclusion list names them
    capped_until: datetime | None = None  # the daily limit stopped the run; next slot frees then
    skipped: int = 0  # recipients left alone (already done, or not selected)

    @property
    def attempted(self) -> int:
        return sum(self.counts.values())


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    message: ComposedMessage = field(compare=False)
    attempt: int = field(compare=False)  # attempts made so far


@dataclass
class Runner:
    campaign: Campaign
    transports: Sequence[Transport]  # one per parallel session
    journal: Journal | None  # None for a dry run: nothing is recorded
    select: Selector = select_pending
    progress: Progress | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    # With several sender accounts, one runner per account: it sends only the messages
    # ``accept`` takes, and its daily limit counts with ``sent_since`` (default: the journal's).
    accept: Callable[[ComposedMessage], bool] | None = None
    sent_since: Callable[[str], tuple[int, str | None]] | None = None
    # The messages the check before the run built: taken instead of building them again.
    prebuilt: Prebuilt | None = None
    # Set by the first Ctrl-C or SIGTERM: finish what is on the wire, send nothing more.
    stop: StopRequest | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # guards the source, the retries, summary and progress
        self._retries: list[_Retry] = []
        self._order = itertools.count()
        self._in_progress = 0  # batches being sent: their retries may still come
        self._stop = threading.Event()
        self._bucket = TokenBucket(self.campaign.send.rate, self.clock, self.sleep)
        self._domain_buckets = {
            domain: TokenBucket(rate, self.clock, self.sleep)
            for domain, rate in self.campaign.send.per_domain_rate
        }
        self._daily_left: int | None = None  # messages the daily limit still allows
        self._daily_frees_at: datetime | None = None
        self._summary = RunSummary()
        self._handed_out = 0  # messages taken from the source (retries not counted)
        # Per session (by id): messages of the batch handed to it not answered yet. Set when
        # the batch is handed out, under the lock; then counted down by the session's thread.
        self._unanswered = {id(transport): 0 for transport in self.transports}
        # Sessions (by id) whose thread was still sending when an interrupt cut the run off:
        # left to the process's exit, as a QUIT from this thread could land inside their data.
        self._cut_off: set[int] = set()

    def run(self) -> RunSummary:
        total = 0
        for _, entry in with_entries(self.journal, self._rows(keep=True)):
            total += 1
            self._summary.selected += self.select(entry)
        self._summary.skipped = total - self._summary.selected
        self._start_daily_limit()
        if self.progress:
            self.progress.start(self._summary.selected)
        messages = self._messages()
        self._source: Iterator[ComposedMessage] = messages
        try:
            with self.stop.sending() if self.stop else contextlib.nullcontext():
                if len(self.transports) == 1:
                    self._session(self.transports[0])  # in this thread, so Ctrl-C lands here
                else:
                    self._parallel_sessions()
        finally:
            with contextlib.suppress(ValueError):  # a session's thread is taking one now
                messages.close()  # stops the build workers
            for transport in self.transports:
                if id(transport) not in self._cut_off:
                    transport.close()
        self._count_unmade_retries()
        return self._summary

    def _count_unmade_retries(self) -> None:
        """A stop leaves retries not made: a message the server deferred stays deferred in
        the journal, and the summary must say so as ``status`` will; one whose connection
        went before its first attempt (attempt 0) stays pending, as it is."""
        for retry in self._retries:
            if retry.attempt > 0:
                self._summary.counts[Status.DEFERRED.value] += 1
        self._retries.clear()

    # --- what to send -------------------------------------------------------------------

    def _messages(self) -> Generator[ComposedMessage]:
        exclusions = load_exclusions(self.campaign.recipients.exclude)
        # Asked again now, not from the first pass: another account's runner may have sent it.
        rows = with_entries(self.journal, self._rows())
        # Recipients that have a resent row's message already (a Bcc that accepted while
        # the To refused), by key: they are not sent it again.
        accepted: dict[str, tuple[str, ...]] = {}

        def selected() -> Iterator[Recipient | Kept]:
            for row, entry in rows:
                if self.select(entry):
                    if entry is not None and entry.accepted:
                        accepted[row.key] = entry.accepted
                    yield row

        for built in self._built(selected()):
            if isinstance(built, tuple):  # the row changed since the check
                raise CampaignError(built)
            assert isinstance(built, ComposedMessage)  # with keep_bytes: the whole message
            narrowed = still_to_reach(built, accepted.pop(built.key, ()))
            if narrowed is None:
                continue  # every recipient has it
            built = narrowed
            if self.accept is not None and not self.accept(built):
                continue  # another sender account's
            if is_suppressed(built, exclusions):
                self._summary.suppressed += 1  # under self._lock: see _next_batch
                continue
            yield built

    def _rows(self, keep: bool = False) -> Iterator[Recipient | Kept]:
        """Every row in CSV order: the message the check kept for it (which says the row's
        number and key: the file is not read again for it), taken unless ``keep``; then the
        file's rows past those the check kept, if the budget stopped it keeping them."""
        prebuilt = self.prebuilt
        if prebuilt is None:
            yield from read_recipients(self.campaign.recipients)
            return
        yield from (prebuilt.peek() if keep else prebuilt.take())
        if prebuilt.full:
            last = prebuilt.last_row
            rows = read_recipients(self.campaign.recipients)
            yield from (row for row in rows if row.row_number > last)

    def _built(self, selected: Iterator[Recipient | Kept]) -> Iterator[Built]:
        """Each selected row's message: the one the check kept, dated now (when it is sent,
        not when it was checked), else built now."""
        for row in selected:
            if isinstance(row, Recipient):  # past the kept ones: so are all that follow
                rest = cast(Iterator[Recipient], itertools.chain([row], selected))
                for _, built in build_all(self.campaign, rest, lambda: datetime.now(UTC)):
                    yield built
                return
            yield expand(dated(row, datetime.now(UTC)))

    def _next_batch(
        self, size: int, session: int
    ) -> list[tuple[ComposedMessage, int]] | float | None:
        """Up to ``size`` messages with their attempts so far, for the session ``session``
        (its transport's id); or seconds to wait for a retry to fall due; or None when
        everything is done (or a stop was requested)."""
        with self._lock:
            if self._stopping():
                return None
            now = self.clock()
            batch: list[tuple[ComposedMessage, int]] = []
            held = 0  # bytes of message data in the batch
            seen: set[int] = set()  # the parts counted in held (a shared part counts once)
            while self._retries and self._retries[0].due <= now and len(batch) < size:
                if batch and held >= BATCH_BYTES:
                    break
                retry = heapq.heappop(self._retries)
                batch.append((retry.message, retry.attempt))
                held += _unseen_bytes(retry.message, seen)
            if self._daily_left is not None:
                size = min(size, self._daily_left)
            if len(self.transports) > 1:
                # The last batches are shared out evenly: no session goes on alone at the end.
                # A share counts what the other sessions have still to send: sessions that
                # start together take equal batches, not a quarter of what each left.
                left = self._summary.selected - self._handed_out + sum(self._unanswered.values())
                size = max(1, min(size, -(-left // len(self.transports))))
            while len(batch) < size and (
                not batch or (held < BATCH_BYTES and self._bucket.available())
            ):
                message = next(self._source, None)
                if message is None:
                    break
                self._handed_out += 1
                batch.append((message, 0))
                held += _unseen_bytes(message, seen)
            if self._daily_left is not None:
                self._daily_left -= len(batch)
                if not batch and self._capped():
                    return None
            if batch:
                self._in_progress += 1
                self._unanswered[session] = len(batch)
                return batch
            if self._retries:
                return max(0.0, self._retries[0].due - now)
            return 0.05 if self._in_progress else None

    # --- sending ------------------------------------------------------------------------

    def _session(self, transport: Transport) -> None:
        send = self.campaign.send
        sent_in_session = 0
        served = 0  # transactions the connection has answered (see _send)
        while not self._stopping():
            if send.max_per_session and sent_in_session >= send.max_per_session:
                transport.close()
            if not transport.connected:
                self._connect(transport)
                sent_in_session = served = 0
            # Asked once connected: how many messages a batch can carry depends on what the
            # server offers (SmtpSession folds send.window in; see delivery._transports).
            size = transport.window
            if send.max_per_session:
                size = min(size, send.max_per_session - sent_in_session)
            batch = self._next_batch(size, id(transport))
            if batch is None:
                return
            if isinstance(batch, float):
                self.sleep(batch)
                continue
            try:
                for message, _ in batch:
                    if self._stopping():
                        break  # the transport sends none of the batch: see carry_on
                    self._bucket.take()
                    for domain in _domains(message, self._domain_buckets):
                        self._domain_buckets[domain].take()
                served = self._send(transport, batch, served)
            finally:
                with self._lock:
                    self._in_progress -= 1
                    self._unanswered[id(transport)] = 0
            sent_in_session += len(batch)

    def _send(
        self, transport: Transport, batch: list[tuple[ComposedMessage, int]], served: int
    ) -> int:
        """Send the batch on the transport's connection, which has answered ``served``
        transactions before it; record and requeue what came back. Returns ``served`` after
        the batch."""
        messages = [message for message, _ in batch]
        journal = self.journal

        answered: list[tuple[ComposedMessage, Outcome]] = []  # not journalled yet
        journalled: set[int] = set()  # id() of messages whose outcome is
        marked: set[int] = set()  # id() of messages marked in flight
        reserved = False
        session = id(transport)

        def on_answer(message: ComposedMessage, outcome: Outcome) -> None:
            if outcome.reached_server:
                answered.append((message, for_row(outcome, message.envelope)))
            self._unanswered[session] -= 1

        def before_data(going: Sequence[ComposedMessage]) -> None:
            nonlocal reserved
            if journal is not None:
                if not reserved and len(going) < len(messages):
                    # Pipelined DATA: a message per round trip. One sync reserves the batch,
                    # and each mark then goes without one (see the journal's docstring).
                    journal.reserve(messages)
                    reserved = True
                # The outcomes that came back ride along with the mark: one write for both.
                journal.mark_in_flight_many(going, answered)
                journalled.update(id(message) for message, _ in answered)
                marked.update(id(message) for message in going)
            answered.clear()

        sent = transport.send_batch(
            messages, before_data, on_answer, carry_on=lambda: not self._stopping()
        )
        outcomes = [for_row(o, m.envelope) for m, o in zip(messages, sent, strict=True)]
        if journal is not None:
            results = list(zip(messages, outcomes, strict=True))
            # A message that never reached the server was not attempted: it keeps the state
            # it had (its mark, made for a whole BDAT group at once, taken back).
            tried = [(m, o) for m, o in results if o.reached_server]
            journal.record_many(
                [(m, o) for m, o in tried if id(m) not in journalled], durable=not reserved
            )
            untried = [m for m, o in results if not o.reached_server and id(m) in marked]
            if untried:
                journal.unmark(untried)
        retries = self.campaign.send.retries
        delay = self.campaign.send.retry_delay
        with self._lock:
            for (message, attempt), outcome in zip(batch, outcomes, strict=True):
                retryable = outcome.status is Status.DEFERRED and outcome.transient
                if not outcome.reached_server:
                    # The connection went before this message's turn (a pipelined batch):
                    # it goes again at once, with no attempt used up; if the run ends
                    # first, it is still pending.
                    retry = _Retry(self.clock(), next(self._order), message, attempt)
                    heapq.heappush(self._retries, retry)
                    continue
                if outcome.session_closed and served:
                    # The server closed the session at MAIL, after answering others on it
                    # (a limit per connection): it never judged this message, which goes
                    # again at once, on the next session, with no attempt used up. A session
                    # that closes at its first MAIL costs the message an attempt: every
                    # session uses up one at least, so a server that takes nothing still
                    # ends the run.
                    retry = _Retry(self.clock(), next(self._order), message, attempt)
                    heapq.heappush(self._retries, retry)
                    self._note(
                        f"row {message.row_number} ({message.key}): {_reply_text(outcome)}; "
                        "sending it again on a new session"
                    )
                    continue
                served += 1
                rest = still_to_reach(message, outcome.accepted)  # never twice to anyone
                if retryable and attempt < retries and rest is not None:
                    wait = delay * 2**attempt
                    retry = _Retry(self.clock() + wait, next(self._order), rest, attempt + 1)
                    heapq.heappush(self._retries, retry)
                    self._note(
                        f"row {message.row_number} ({message.key}): {_reply_text(outcome)}; "
                        f"retry {attempt + 1} of {retries} in {wait:g}s"
                    )
                    continue
                self._summary.counts[outcome.status.value] += 1
                if self.progress:
                    self.progress.outcome(message, outcome)
        return served

    def _capped(self) -> bool:
        """The daily limit is used up and a recipient is still waiting: stop cleanly."""
        if self._daily_left is None or self._daily_left > 0 or self._in_progress or self._retries:
            return False
        upcoming = next(self._source, None)
        if upcoming is None:
            return False  # nothing left anyway
        self._source = itertools.chain([upcoming], self._source)
        self._summary.capped_until = self._daily_frees_at
        return True

    def _start_daily_limit(self) -> None:
        """How many messages the last 24 hours leave for this run (counted in this
        campaign's journal: every message that went to the server)."""
        limit = self.campaign.send.daily_limit
        if not limit or self.journal is None:
            return
        now = clock.now()
        since = (now - _DAY).astimezone(UTC).isoformat(timespec="seconds")
        used, earliest = (self.sent_since or self.journal.sent_since)(since)
        self._daily_left = max(0, limit - used)
        first = datetime.fromisoformat(earliest) if earliest else now
        self._daily_frees_at = first + _DAY

    def _connect(self, transport: Transport) -> None:
        """Connect, retrying an unreachable server with backoff; RunAborted when it stays so."""
        retries = self.campaign.send.retries
        delay = self.campaign.send.retry_delay
        for attempt in range(retries + 1):
            try:
                transport.connect()
                return
            except RunAborted as exc:
                if not exc.transient or attempt >= retries or self._stopping():
                    raise
                wait = delay * 2**attempt
                with self._lock:
                    self._note(f"{exc}; trying again in {wait:g}s")
                self.sleep(wait)

    def _parallel_sessions(self) -> None:
        errors: list[BaseException] = []

        def work(transport: Transport) -> None:
            try:
                self._session(transport)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
                errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in self.transports]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:
            # Stop at once (a second Ctrl-C, or the grace is over): sessions still sending
            # are cut off mid-batch, what they have on the wire stays unknown.
            self._stop.set()
            alive = zip(self.transports, threads, strict=True)
            self._cut_off = {id(t) for t, thread in alive if thread.is_alive()}
            raise
        if errors:
            raise errors[0]

    def _stopping(self) -> bool:
        """A session failed, or a stop was requested: hand out nothing more."""
        return self._stop.is_set() or (self.stop is not None and self.stop.requested())

    def _note(self, text: str) -> None:
        if self.progress:
            self.progress.note(text)


_DAY = timedelta(days=1)
# A batch holds at most about this much message data (whatever its count of messages), an
# attachment every message shares counted once: 256 messages of 2 KB, or of 140 KB with the
# same 100 KB PDF; 29 of 140 KB each their own. When every message of a batch held a copy of
# that PDF, 10,000 of them to smtp-sink peaked at 100 MB of RSS with 16 MB, 84 to 85 with 8
# and 77 with 4 (timings within the noise).
BATCH_BYTES = 4 << 20


def _unseen_bytes(message: ComposedMessage, seen: set[int]) -> int:
    """The size of the message's parts not in ``seen`` (ids of parts), which then are."""
    size = 0
    for part in message.parts:
        if id(part) not in seen:
            seen.add(id(part))
            size += len(part)
    return size


def _domains(message: ComposedMessage, throttled: dict[str, TokenBucket]) -> set[str]:
    """The throttled recipient domains this message goes to."""
    if not throttled:
        return set()
    domains = {address.rpartition("@")[2].lower() for address in message.envelope.rcpt_tos}
    return domains & throttled.keys()


def _reply_text(outcome: Outcome) -> str:
    return f"{outcome.code} {outcome.reply}".strip() if outcome.code else outcome.reply
