"""The token bucket, on a simulated clock: the rate holds over ten seconds, 0 costs nothing."""

from __future__ import annotations

import pytest

from batchmail.ratelimit import TokenBucket


class SimulatedClock:
    """Time that moves only when the bucket sleeps, plus a fixed cost per message."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps += 1
        self.now += seconds


@pytest.mark.parametrize(("rate", "work"), [(5.0, 0.0), (50.0, 0.001), (0.5, 0.0), (200, 0.004)])
def test_rate_within_five_percent_over_ten_seconds_or_more(rate: float, work: float) -> None:
    clock = SimulatedClock()
    bucket = TokenBucket(rate, clock, clock.sleep)
    start = clock.now
    sent = 0
    # Ten seconds, or long enough for 50 messages at a slow rate (one message more or less
    # is 20% of five).
    span = max(10.0, 50 / rate)
    while clock.now - start < span:
        bucket.take()
        sent += 1
        clock.now += work  # the time it takes to send one
    elapsed = clock.now - start
    assert sent / elapsed == pytest.approx(min(rate, 1 / work if work else rate), rel=0.05)


def test_catching_up_after_a_pause_is_bounded_to_one_second() -> None:
    clock = SimulatedClock()
    bucket = TokenBucket(10.0, clock, clock.sleep)
    bucket.take()
    clock.now += 60  # a minute of nothing (a slow server)
    start = clock.now
    for _ in range(40):
        bucket.take()
    # At most a second's worth (10) goes at once; the other 30 wait for their tokens.
    assert clock.now - start == pytest.approx(3.0, abs=0.11)


def test_rate_zero_never_sleeps_or_reads_the_clock() -> None:
    calls = []

    def clock() -> float:
        calls.append(1)
        return 0.0

    bucket = TokenBucket(0, clock, lambda s: calls.append(s))  # type: ignore[func-returns-value]
    calls.clear()
    for _ in range(1000):
        bucket.take()
    assert bucket.available() and calls == []
