"""The runner's pacing, on a simulated clock, with the dry-run outbox as a real transport."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
from campaign_files import people, write_campaign

import batchmail.runner as runner_module
from batchmail.campaign import load_campaign
from batchmail.outbox import Outbox
from batchmail.runner import Runner


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_paced(tmp_path: Path, rows: list[dict[str, str]], **send: object) -> float:
    path = write_campaign(tmp_path, rows, smtp="embedded")
    campaign = load_campaign(path)
    campaign = dataclasses.replace(campaign, send=dataclasses.replace(campaign.send, **send))
    clock = SimulatedClock()
    runner = Runner(
        campaign,
        [Outbox(tmp_path / "out")],
        None,
        select=lambda entry: True,
        sleep=clock.sleep,
        clock=clock,
    )
    summary = runner.run()
    assert summary.counts["sent"] == len(rows)
    return clock.now


def test_per_domain_rate_throttles_only_that_domain(tmp_path: Path) -> None:
    throttled = people(5)
    elapsed = run_paced(tmp_path / "a", throttled, per_domain_rate=(("example.org", 2.0),))
    assert 1.9 <= elapsed <= 2.1  # five messages at 2/s: the first at once, then every 0.5 s
    others = [{**row, "email": row["email"].replace(".org", ".net")} for row in people(5)]
    assert run_paced(tmp_path / "b", others, per_domain_rate=(("example.org", 2.0),)) == 0


def test_campaign_rate_paces_every_message(tmp_path: Path) -> None:
    assert 4.4 <= run_paced(tmp_path, people(10), rate=2.0) <= 4.6


class BatchRecorder(Outbox):
    """The dry-run outbox, taking as many messages a batch as a pipelining server would, and
    noting the sizes of the messages of each batch the runner hands it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.batches: list[list[int]] = []

    @property
    def window(self) -> int:
        return 256

    def send_batch(self, messages, before_data, answered=None, carry_on=None):  # type: ignore[no-untyped-def]
        self.batches.append([len(message.data) for message in messages])
        return super().send_batch(messages, before_data, answered, carry_on)


def test_a_batch_holds_at_most_batch_bytes_of_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = load_campaign(write_campaign(tmp_path, people(40), smtp="embedded"))
    monkeypatch.setattr(runner_module, "BATCH_BYTES", 10_000)
    outbox = BatchRecorder(tmp_path / "out")
    summary = Runner(campaign, [outbox], None, select=lambda entry: True).run()
    assert summary.counts["sent"] == 40
    assert sum(map(len, outbox.batches)) == 40 and len(outbox.batches) > 2
    for sizes in outbox.batches[:-1]:
        # Closed by the message that reached BATCH_BYTES, not before, not after.
        assert sum(sizes[:-1]) < 10_000 <= sum(sizes), outbox.batches


def test_an_attachment_every_message_shares_counts_once_in_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "guide.pdf").write_bytes(os.urandom(40_000))  # 54 KB in base64
    message = {"attachments": ["guide.pdf"]}
    path = write_campaign(tmp_path, people(30), smtp="embedded", message=message)
    monkeypatch.setattr(runner_module, "BATCH_BYTES", 100_000)
    outbox = BatchRecorder(tmp_path / "out")
    summary = Runner(load_campaign(path), [outbox], None, select=lambda entry: True).run()
    assert summary.counts["sent"] == 30
    sizes = [size for batch in outbox.batches for size in batch]
    assert len(sizes) == 30 and min(sizes) > 54_000
    # Counted in every message, the PDF would close a batch at the second message; counted
    # once, about 45 KB of the messages' own bytes fit beside it: 15 or so of 3 KB.
    assert all(len(batch) >= 10 for batch in outbox.batches[:-1]), outbox.batches


class StartingTogether(BatchRecorder):
    """A session whose first batch waits until every session has one: sessions that were
    connected at the same moment."""

    def __init__(self, directory: Path, everyone: threading.Barrier) -> None:
        super().__init__(directory)
        self._everyone: threading.Barrier | None = everyone

    def send_batch(self, messages, before_data, answered=None, carry_on=None):  # type: ignore[no-untyped-def]
        self.batches.append([len(message.data) for message in messages])
        if self._everyone is not None:
            self._everyone.wait(timeout=30)
            self._everyone = None
        return Outbox.send_batch(self, messages, before_data, answered, carry_on)


def test_sessions_that_start_together_take_equal_batches(tmp_path: Path) -> None:
    # Each taking a quarter of what the others left (25, 19, 14, 11), the first would still
    # be sending when the others were done, and the rest would go in ever smaller batches.
    campaign = load_campaign(write_campaign(tmp_path, people(100), smtp="embedded"))
    everyone = threading.Barrier(4)
    sessions = [StartingTogether(tmp_path / f"out{n}", everyone) for n in range(4)]
    summary = Runner(campaign, sessions, None, select=lambda entry: True).run()
    assert summary.counts["sent"] == 100
    assert [len(session.batches[0]) for session in sessions] == [25, 25, 25, 25]
    assert all(len(session.batches) == 1 for session in sessions)
