"""A token bucket shared by every session of a run: at most ``rate`` messages per second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``take()`` blocks until a message may go. With rate 0 it returns at once, untouched.

    The bucket holds at most ``burst`` tokens (one second's worth, at least one), so after a
    pause the sender catches up by no more than that: over any window of ten seconds or more
    the rate stays within a few percent of ``rate``.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._burst = max(1.0, rate)
        self._tokens = 1.0  # start with one: the first message need not wait
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        if self.rate <= 0:
            return
        while True:
            with self._lock:
                wait = self._try_take()
            if wait <= 0:
                return
            self._sleep(wait)

    def available(self) -> bool:
        """Whether a take() now would not wait (used to send a partial batch rather than hold
        messages back while waiting for a token)."""
        if self.rate <= 0:
            return True
        with self._lock:
            self._refill()
            return self._tokens >= 1 - 1e-9

    def _try_take(self) -> float:
        self._refill()
        # A hair below one counts as one: waiting for a rounding error would never end.
        if self._tokens >= 1 - 1e-9:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
