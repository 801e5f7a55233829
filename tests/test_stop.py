"""The stop request on real signals, sent to this process (pytest runs tests in its main
thread, where Python runs signal handlers)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from batchmail.errors import CampaignError
from batchmail.stop import GRACE_VARIABLE, Interrupted, StopRequest, grace_from_environment


def signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    # The handler runs before the next bytecode: an event wait is interrupted by it.
    threading.Event().wait(0.001)


def test_outside_sending_the_first_signal_stops_at_once() -> None:
    with StopRequest().handling_signals() as stop, pytest.raises(Interrupted) as caught:
        signal_self(signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM and stop.signum == signal.SIGTERM
    assert not stop.requested()


def test_while_sending_the_first_signal_asks_the_second_stops() -> None:
    said: list[int] = []
    stop = StopRequest(grace=3600, on_request=said.append)
    with stop.handling_signals(), stop.sending():
        signal_self(signal.SIGINT)
        assert stop.requested() and said == [signal.SIGINT]
        with pytest.raises(Interrupted) as caught:
            signal_self(signal.SIGTERM)
    assert caught.value.signum == signal.SIGINT  # the first signal decides the exit code


def test_the_grace_ends_in_a_hard_stop() -> None:
    stop = StopRequest(grace=0.05)
    never = threading.Event()
    with stop.handling_signals(), stop.sending(), pytest.raises(Interrupted):
        signal_self(signal.SIGINT)
        never.wait(600)  # only the grace's alarm ends this
    assert stop.requested()


def test_a_stop_within_the_grace_cancels_the_alarm_and_handlers_are_put_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    stop = StopRequest(grace=3600)
    with stop.handling_signals():
        with stop.sending():
            signal_self(signal.SIGINT)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_requested_stop_ends_a_wait() -> None:
    stop = StopRequest(grace=3600)
    with stop.handling_signals(), stop.sending():
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
        stop.sleep(600)  # a retry's wait: the stop ends it
        assert stop.requested()


@pytest.mark.parametrize("text", ["abc", "0", "-1", "nan", "inf"])
def test_a_grace_that_is_not_a_number_of_seconds_is_refused(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(GRACE_VARIABLE, text)
    with pytest.raises(CampaignError, match=GRACE_VARIABLE):
        grace_from_environment()


def test_the_grace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GRACE_VARIABLE, " 2.5 ")
    assert grace_from_environment() == 2.5
    monkeypatch.delenv(GRACE_VARIABLE)
    assert grace_from_environment() == 10.0
