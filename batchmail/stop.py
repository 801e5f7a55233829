"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM without leaving doubt: what is on the wire
is finished first.

While messages are going out (``StopRequest.sending``), the first signal only asks the
runner to stop: it hands out no more messages, the transports start no new transaction and
wait for the replies to those already sent, the journal records them, and the command exits
130 (143 for SIGTERM). If that takes more than the grace (``GRACE_SECONDS``), or a second
signal comes, ``Interrupted`` is raised in the main thread at once, as Ctrl-C always did:
whatever is then on the wire stays ``unknown``. Outside sending (the check before a run, the
summary after it) the first signal raises ``Interrupted`` at once: nothing is on the wire.

Python runs signal handlers in the main thread, between bytecodes, so a handler that only
sets a flag can land anywhere (mid journal write included) without harm.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from batchmail.errors import CampaignError, Problem

GRACE_SECONDS = 10.0
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Stop at once. ``signum``: the first signal received (it decides the exit code)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """Set by the first SIGINT or SIGTERM while sending; the runner and the transports ask
    ``requested()`` between messages. ``on_request(signum)`` is called from the signal
    handler when a stop is requested: it must not block, nor write to a buffered stream."""

    def __init__(
        self,
        grace: float = GRACE_SECONDS,
        on_request: Callable[[int], None] | None = None,
    ) -> None:
        self.grace = grace
        self._on_request = on_request
        self._event = threading.Event()
        self._sending = False
        self.signum: int | None = None  # the first signal received

    def requested(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when a stop is requested meanwhile."""
        self._event.wait(seconds)

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[StopRequest]:
        """Route SIGINT, SIGTERM and the grace's alarm here for the length of the block,
        then put back what was there. Only the main thread can: from another, signals are
        left as they are (and a stop is never requested)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in (*HANDLED, signal.SIGALRM)}
        for signum in HANDLED:
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_grace_over)
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """While messages go out: the first signal asks to stop, it does not interrupt."""
        self._sending = True
        try:
            yield
        finally:
            self._sending = False
            signal.setitimer(signal.ITIMER_REAL, 0)  # done within the grace: no hard stop

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if self._event.is_set() or not self._sending:
            raise Interrupted(self.signum)
        self._event.set()
        signal.setitimer(signal.ITIMER_REAL, self.grace)
        if self._on_request is not None:
            self._on_request(signum)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        if self._sending:
            raise Interrupted(self.signum if self.signum is not None else signal.SIGINT)


GRACE_VARIABLE = "BATCHMAIL_STOP_GRACE"


def grace_from_environment() -> float:
    """The grace in seconds: ``BATCHMAIL_STOP_GRACE`` if set (a slow server may need more;
    tests use it), else ``GRACE_SECONDS``."""
    text = os.environ.get(GRACE_VARIABLE, "").strip()
    if not text:
        return GRACE_SECONDS
    try:
        grace = float(text)
    except ValueError:
        grace = -1.0
    if not 0 < grace < 1e6:
        problem = Problem(GRACE_VARIABLE, f"{text!r} is not a number of seconds above 0")
        raise CampaignError([problem])
    return grace
