"""A long faulty run: 20,000 recipients through a server that answers 421, 451 and 550 at
random, hangs up before and after the data and stalls, while the real ``batchmail run`` is
SIGKILLed at random moments and started again until nobody is pending, then ``resend`` until
nobody is deferred.

In the end every recipient is sent, failed or unknown; each one sent got exactly one copy;
any copy beyond the first went to a recipient the journal had in flight at a kill; and the
journal is sound. The figures are printed (run with -s) and repeated in assertion messages.

``BATCHMAIL_SOAK_SEED`` replays a run (the seed drives the faults, the kill moments and the
server's mode); ``BATCHMAIL_SOAK_RECIPIENTS`` changes the count.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from campaign_files import batchmail, people, write_campaign
from faultserver import ChaosHandler
from journal_probe import integrity, journal_file, statuses
from servers import MODES, StartServer

RECIPIENTS = int(os.environ.get("BATCHMAIL_SOAK_RECIPIENTS", "20000"))
KILLS = 5  # SIGKILLs during `run`; after that a run may finish
MAX_RESENDS = 10
DEADLINE_SECONDS = 600  # a hard stop, far above the usual few minutes


@dataclass
class Figures:
    seed: int
    mode: str
    recipients: int = RECIPIENTS
    kills: int = 0
    runs: int = 0
    resends: int = 0
    in_flight_at_kills: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def report(self, handler: ChaosHandler, final: dict[str, int] | None = None) -> str:
        copies = handler.copies()
        duplicates = sum(n - 1 for n in copies.values() if n > 1)
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(handler.fault_counts.items()))
        return (
            f"soak seed {self.seed} (BATCHMAIL_SOAK_SEED), server mode {self.mode}: "
            f"{self.recipients} recipients, {sum(handler.fault_counts.values())} faults "
            f"({faults}), {self.kills} kills, {self.runs} runs, {self.resends} resends, "
            f"{len(self.in_flight_at_kills)} in flight at a kill, {duplicates} duplicates, "
            f"final {final}, {time.monotonic() - self.started:.0f} s"
        )


@pytest.fixture
def fast_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory where there is one (/dev/shm): the journal's fsyncs guard against
    a power cut, which a SIGKILL is not, and on a slow disk they would dominate the run."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="batchmail-soak-") as directory:
        yield Path(directory)


def start(command: str, campaign: Path, logs: Path) -> subprocess.Popen[bytes]:
    """`batchmail command campaign --quiet` in the background, its output to files (a pipe
    nobody reads could fill up and stall it)."""
    number = len(list(logs.glob("*.err")))
    return subprocess.Popen(
        [sys.executable, "-m", "batchmail", command, str(campaign), "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=(logs / f"{number:03d}-{command}.out").open("wb"),
        stderr=(logs / f"{number:03d}-{command}.err").open("wb"),
    )


def finished(process: subprocess.Popen[bytes], logs: Path, figures: str) -> None:
    """Wait for a run that was not killed; it must end as a run with outcomes does."""
    code = process.wait(timeout=DEADLINE_SECONDS)
    errors = sorted(logs.glob("*.err"))[-1].read_text()
    assert code in (0, 1) and "Traceback" not in errors, f"exit {code}: {errors}\n{figures}"


def kill_mid_send(
    process: subprocess.Popen[bytes], handler: ChaosHandler, rng: random.Random
) -> bool:
    """SIGKILL ``process`` at a random moment: while it starts (checks, journal, fingerprint),
    while the server holds a message's data (so that it is in flight), or after the server
    has taken a random number of further messages. False if it ended first."""
    moment = rng.random()
    if moment < 0.2:
        time.sleep(rng.uniform(0.1, 3.0))
    else:
        target = handler.accepted_total() + rng.randint(50, RECIPIENTS // 8)
        while handler.accepted_total() < target and process.poll() is None:
            time.sleep(0.002)
        if moment < 0.6:
            held = handler.hold_next_data(0.3)
            while not held.wait(0.05) and process.poll() is None:
                pass
        time.sleep(rng.uniform(0, 0.02))  # anywhere in the send loop, or in the hold
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def pending_in_journal(campaign: Path) -> int:
    path = journal_file(campaign)
    return RECIPIENTS - (len(statuses(path)) if path.exists() else 0)


@pytest.mark.slow
def test_soak_with_faults_and_kills(
    fast_directory: Path, tmp_path: Path, start_smtp_server: StartServer
) -> None:
    seed = int(os.environ.get("BATCHMAIL_SOAK_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    figures = Figures(seed, mode=rng.choice(MODES))
    print(f"\nsoak seed {seed}, server mode {figures.mode}")
    handler = ChaosHandler(random.Random(rng.random()))
    server = start_smtp_server(handler, mode=figures.mode)
    smtp = {"host": server.host, "port": server.port, "security": "none"}
    campaign = write_campaign(
        fast_directory / "campaign",
        people(RECIPIENTS),
        smtp={**smtp, "timeout": 2, "data_timeout": 2},
        send={"retries": 6, "retry_delay": 0.01},
        html=None,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    journal = journal_file(campaign)

    # `run`, killed KILLS times at random moments, until the journal has everybody.
    while pending_in_journal(campaign):
        assert time.monotonic() - figures.started < DEADLINE_SECONDS, figures.report(handler)
        process = start("run", campaign, logs)
        figures.runs += 1
        if figures.kills < KILLS and kill_mid_send(process, handler, rng):
            figures.kills += 1
            if journal.exists():
                marked = statuses(journal)
                figures.in_flight_at_kills |= {k for k, s in marked.items() if s == "in_flight"}
                assert integrity(journal) == "ok", figures.report(handler)
            continue
        finished(process, logs, figures.report(handler))

    # `resend` until nobody is deferred (retries in a run can run out; a kill can strand a
    # recipient between attempts).
    while status_counts(campaign)["deferred"]:
        assert figures.resends < MAX_RESENDS, figures.report(handler, status_counts(campaign))
        figures.resends += 1
        finished(start("resend", campaign, logs), logs, figures.report(handler))

    final = status_counts(campaign)
    report = figures.report(handler, final)
    print(report)
    check_outcome(campaign, handler, figures, report)


def status_counts(campaign: Path) -> dict[str, int]:
    result = batchmail("status", campaign, "--json", timeout=120)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    counts: dict[str, int] = json.loads(result.stdout)["counts"]
    return counts


def check_outcome(campaign: Path, handler: ChaosHandler, figures: Figures, report: str) -> None:
    journal = journal_file(campaign)
    final = statuses(journal)
    assert integrity(journal) == "ok", report
    ends = Counter(final.values())
    assert set(ends) <= {"sent", "failed", "unknown", "in_flight"}, report
    assert len(final) == RECIPIENTS, report
    # Left in flight only by a kill: a run that ends records every outcome.
    assert {k for k, s in final.items() if s == "in_flight"} <= figures.in_flight_at_kills, report

    copies = handler.copies()
    for key, status in final.items():
        if status == "sent":
            assert copies[key] == 1, f"{key} sent, {copies[key]} copies; {report}"
        elif status == "failed":
            assert copies[key] == 0, f"{key} failed, yet {copies[key]} copies; {report}"
    duplicates = {key for key, n in copies.items() if n > 1}
    assert duplicates <= figures.in_flight_at_kills, f"{sorted(duplicates)[:10]}; {report}"
    # A duplicate is the same message again: the Message-ID is kept across attempts.
    for key in duplicates:
        ids = {m.message_id for m in handler.messages if m.rcpt_tos[0] == key}
        assert len(ids) == 1, f"{key}: {ids}; {report}"
    assert set(copies) <= set(final), report  # nobody outside the CSV was mailed
