"""An SMTP test server that misbehaves at random: a ``RecordingHandler`` drawing a fault for
each command from a seeded generator, and counting every fault it injects by kind.

The faults, at the point of the transaction where each can happen:

    MAIL   421 and close; close without a reply; stall past the client's timeout
    RCPT   451; 550; close without a reply
    data   451; 550; close without a reply, the message kept or lost; stall past the
           client's data timeout, the message kept

"Kept" means the server took the message (it counts as an accepted copy) although the
client never hears so: the case that makes a message's fate unknown to its sender.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session
from servers import RecordingHandler


@dataclass(frozen=True)
class FaultRates:
    """Probability of each fault per command where it can happen; stalls are also capped,
    since each costs the client a whole timeout."""

    close_421_at_mail: float = 0.002
    drop_at_mail: float = 0.002
    stall_at_mail: float = 0.0005
    defer_at_rcpt: float = 0.01
    refuse_at_rcpt: float = 0.003
    drop_at_rcpt: float = 0.002
    defer_after_data: float = 0.004
    refuse_after_data: float = 0.002
    drop_after_data_kept: float = 0.002
    drop_after_data_lost: float = 0.002
    stall_after_data_kept: float = 0.0005
    max_stalls: int = 3  # of each kind
    stall_seconds: float = 2.5  # longer than the campaign's timeout and data_timeout


class ChaosHandler(RecordingHandler):
    """Accepts and records messages like ``RecordingHandler``, except for the faults it
    draws from ``rng`` at the ``rates`` given. ``fault_counts`` counts them by kind."""

    def __init__(self, rng: random.Random, rates: FaultRates | None = None) -> None:
        super().__init__()
        self.rng = rng
        self.rates = rates or FaultRates()
        self.fault_counts: Counter[str] = Counter()
        self._fault_lock = threading.Lock()
        self._hold: tuple[threading.Event, float] | None = None

    def accepted_total(self) -> int:
        """How many copies the server has accepted so far (cheap: no list copy)."""
        with self._lock:
            return len(self._messages)

    def hold_next_data(self, seconds: float) -> threading.Event:
        """Take the next message, then hold its reply ``seconds``; the event is set when the
        hold begins: a moment when the client waits for the reply, with the message in
        flight and already delivered."""
        event = threading.Event()
        with self._fault_lock:
            self._hold = (event, seconds)
        return event

    def copies(self) -> Counter[str]:
        """Accepted copies per (sole) envelope recipient."""
        return Counter(message.rcpt_tos[0] for message in self.messages)

    # --- the hooks --------------------------------------------------------------------

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        fault = self._draw(("close_421_at_mail", "drop_at_mail", "stall_at_mail"))
        if fault == "close_421_at_mail":
            assert server.transport is not None
            server.loop.call_soon(server.transport.close)  # after the reply is written
            return "421 4.3.2 Service shutting down, closing transmission channel"
        if fault == "drop_at_mail":
            await _hang_up(server)
        if fault == "stall_at_mail":
            await asyncio.sleep(self.rates.stall_seconds)
        return None

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        fault = self._draw(("defer_at_rcpt", "refuse_at_rcpt", "drop_at_rcpt"))
        if fault == "defer_at_rcpt":
            return "451 4.3.0 Temporary failure, try again later"
        if fault == "refuse_at_rcpt":
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if fault == "drop_at_rcpt":
            await _hang_up(server)
        return None

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        with self._fault_lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            self._keep(server, envelope)
            hold[0].set()
            await asyncio.sleep(hold[1])  # cancelled if the client dies meanwhile
            return "250 2.0.0 OK queued"
        fault = self._draw(
            (
                "defer_after_data",
                "refuse_after_data",
                "drop_after_data_kept",
                "drop_after_data_lost",
                "stall_after_data_kept",
            )
        )
        if fault == "defer_after_data":
            return "451 4.3.0 Queue busy, try again later"
        if fault == "refuse_after_data":
            return "554 5.7.1 Message rejected"
        if fault in ("drop_after_data_kept", "stall_after_data_kept"):
            self._keep(server, envelope)
            if fault == "stall_after_data_kept":
                await asyncio.sleep(self.rates.stall_seconds)  # the client gives up first
                await _hang_up(server)
        if fault in ("drop_after_data_kept", "drop_after_data_lost"):
            await _hang_up(server)
        return None

    # --- helpers ----------------------------------------------------------------------

    def _draw(self, kinds: tuple[str, ...]) -> str | None:
        """At most one fault among ``kinds``, each with its own probability."""
        with self._fault_lock:
            roll = self.rng.random()
            for kind in kinds:
                rate: float = getattr(self.rates, kind)
                if roll < rate:
                    if (
                        kind.startswith("stall")
                        and self.fault_counts[kind] >= self.rates.max_stalls
                    ):
                        return None
                    self.fault_counts[kind] += 1
                    self.take_fault()
                    return kind
                roll -= rate
            return None

    def _keep(self, server: SMTP, envelope: Envelope) -> None:
        message = self.received(server, envelope)
        with self._lock:
            self._messages.append(message)


async def _hang_up(server: SMTP) -> None:
    """Close the connection without a reply; closing cancels this task, so none is sent."""
    assert server.transport is not None
    server.transport.close()
    await asyncio.get_running_loop().create_future()


class DyingHandler(RecordingHandler):
    """Accepts and records messages until the ``die_at``-th MAIL FROM (counted over every
    connection), where the server dies: ``stop_listening`` is called (new connections are
    refused) and the connection closes without a reply. It dies once; a server restarted
    with the same handler (``SmtpTestServer.start`` again: same port) accepts everything."""

    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at: int | None = die_at
        self.mails = 0
        self.stop_listening: Callable[[], None] | None = None
        self.died = threading.Event()

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        self.mails += 1
        if self.mails == self.die_at:
            self.die_at = None
            self.take_fault()
            if self.stop_listening is not None:
                self.stop_listening()
            self.died.set()
            await _hang_up(server)
        return None
