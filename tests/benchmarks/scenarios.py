"""The scenarios: which server, which content, which contenders, how many recipients.

Each scenario starts its own server (and delaying proxy), runs every contender on the same
workload one after the other, and returns one ``Result`` per contender. A contender that
fails is reported as such; the others still run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import contenders
import mailservers
from measure import ContenderFailed, Measurement
from workload import Workload, write_workload


@dataclass(frozen=True)
class Settings:
    workdir: Path
    mailmerge: Path  # the mailmerge executable, in its own virtualenv
    loopback_count: int = 10_000
    rtt: float = 0.05
    rtt_count: int = 1_000
    rtt_baseline_count: int = 200  # mailmerge and smtplib pay per message: a sample will do
    memory_counts: tuple[int, int] = (10_000, 1_000_000)
    dry_run_counts: tuple[int, int] = (10_000, 200_000)
    window: int = 100  # the raw BDAT sender's messages in flight
    profile: bool = False
    send_options: tuple[tuple[str, object], ...] = ()  # extra `send:` keys for batchmail


@dataclass(frozen=True)
class Result:
    scenario: str
    contender: str
    server: str
    count: int
    measurement: Measurement | None
    error: str = ""

    @property
    def rate(self) -> float | None:
        if self.measurement is None:
            return None
        return self.count / self.measurement.wall


@dataclass
class Outcome:
    """What one scenario produced: results, notes for the report, cProfile files."""

    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, Path] = field(default_factory=dict)

    def measure(
        self, scenario: str, contender: str, server: str, count: int, run: Callable[[], Measurement]
    ) -> None:
        print(f"  {scenario}: {contender} x {count} ...", end=" ", flush=True)
        try:
            measurement = run()
        except ContenderFailed as exc:
            print("FAILED")
            self.results.append(Result(scenario, contender, server, count, None, str(exc)))
            return
        print(f"{measurement.wall:.1f} s, {count / measurement.wall:.1f} msg/s", flush=True)
        self.results.append(Result(scenario, contender, server, count, measurement))


@contextlib.contextmanager
def sink_server(outcome: Outcome) -> Iterator[mailservers.Server]:
    """smtp-sink, or the aiosmtpd fallback (with a note saying how to get Postfix)."""
    if mailservers.postfix_installed():
        with mailservers.smtp_sink() as server:
            yield server
        return
    outcome.notes.append(
        "Postfix is not installed, so the PIPELINING server is aiosmtpd's Sink (which offers "
        f"neither PIPELINING nor CHUNKING). Install it with: {mailservers.INSTALL_POSTFIX}"
    )
    with mailservers.aiosmtpd_sink() as server:
        yield server


def workload(settings: Settings, name: str, count: int, attachment: bool) -> Workload:
    directory = settings.workdir / f"{name}-{count}"
    return write_workload(directory, count, attachment, settings.send_options)


def loopback(settings: Settings, attachment: bool) -> Outcome:
    """batchmail against every baseline, straight to the sink on 127.0.0.1."""
    name = "loopback-100k" if attachment else "loopback-2k"
    count = settings.loopback_count
    load = workload(settings, name, count, attachment)
    outcome = Outcome()
    with sink_server(outcome) as server:
        port = server.port
        raw_mode = "data" if "PIPELINING" in server.extensions else None
        run = _runner(outcome, name, server.name)
        run("batchmail", count, lambda: contenders.batchmail_run(load, port))
        # Two sessions let the server take one message while batchmail readies the next:
        # with DATA each message otherwise waits for its 354, and the two take turns.
        run("batchmail sessions=2", count, lambda: contenders.batchmail_run(load, port, 2))
        run("mailmerge", count, lambda: contenders.mailmerge(settings.mailmerge, load, port, count))
        run("smtplib", count, lambda: contenders.smtplib_baseline(load, port, count))
        if raw_mode:
            run("raw DATA", count, lambda: contenders.raw_sender(load, port, raw_mode, 1))
        if settings.profile:
            out = settings.workdir / f"profile-{name}"
            outcome.profiles[name] = contenders.profile_batchmail(load, port, out)
    return outcome


def round_trip(settings: Settings, chunking: bool) -> Outcome:
    """Through the delaying proxy: one session, four sessions, and the baselines."""
    name = "rtt-chunking" if chunking else "rtt-pipelining"
    outcome = Outcome()
    if chunking and not (mailservers.postfix_installed() and os.geteuid() == 0):
        outcome.notes.append(
            f"{name} skipped: it needs Postfix's smtpd, started as root. Install it with: "
            f"{mailservers.INSTALL_POSTFIX}"
        )
        return outcome
    count = settings.rtt_count
    sample = min(settings.rtt_baseline_count, count)
    load = workload(settings, "rtt", count, attachment=False)
    server_cm = mailservers.postfix_smtpd() if chunking else sink_server(outcome)
    with (
        server_cm as server,
        contenders.delaying_proxy(server.port, settings.rtt, settings.workdir) as port,
    ):
        label = f"{server.name} +{settings.rtt * 1000:g} ms RTT"
        run = _runner(outcome, name, label)
        run("batchmail", count, lambda: contenders.batchmail_run(load, port, 1))
        run("batchmail sessions=4", count, lambda: contenders.batchmail_run(load, port, 4))
        mm = settings.mailmerge
        run("mailmerge", sample, lambda: contenders.mailmerge(mm, load, port, sample))
        run("smtplib", sample, lambda: contenders.smtplib_baseline(load, port, sample))
        mode = "bdat" if "CHUNKING" in server.extensions else "data"
        if mode == "bdat" or "PIPELINING" in server.extensions:
            window = settings.window
            raw = f"raw {mode.upper()}"
            run(raw, count, lambda: contenders.raw_sender(load, port, mode, window))
            # What the server takes from four sessions: the most batchmail's four could get.
            four = f"{raw} sessions=4"
            run(four, count, lambda: contenders.raw_sender(load, port, mode, window, 4))
        if settings.profile:
            out = settings.workdir / f"profile-{name}"
            outcome.profiles[name] = contenders.profile_batchmail(load, port, out)
    return outcome


def memory(settings: Settings) -> Outcome:
    """Peak RSS as the recipient count grows: render pipeline and a real send."""
    outcome = Outcome()
    small, large = settings.memory_counts
    loads = [workload(settings, "memory", count, attachment=False) for count in (small, large)]
    out = settings.workdir / "dry-run-out"
    run = _runner(outcome, "memory", "(no server)")
    run("dry-run CLI, .eml files", small, lambda: contenders.batchmail_dry_run(loads[0], out))
    for load in loads:
        run("render pipeline, discarded", load.count, lambda w=load: contenders.render_pipeline(w))
    with sink_server(outcome) as server:
        run = _runner(outcome, "memory", server.name)
        port = server.port
        for load in loads:
            run("run to the sink", load.count, lambda w=load: contenders.batchmail_run(w, port))
    return outcome


def dry_run_memory(settings: Settings) -> Outcome:
    """Peak RSS of `run --dry-run` on short text-only messages, where what holds each kept
    message outweighs its bytes, at a small and a large count."""
    outcome = Outcome()
    out = settings.workdir / "dry-run-out"
    run = _runner(outcome, "dry-run-memory", "(no server)")
    for count in settings.dry_run_counts:
        directory = settings.workdir / f"dry-run-memory-{count}"
        load = write_workload(directory, count, False, settings.send_options, short=True)
        run("dry-run CLI, .eml files", count, lambda w=load: contenders.batchmail_dry_run(w, out))
    return outcome


def _runner(outcome: Outcome, scenario: str, server: str) -> Callable[..., None]:
    def run(contender: str, count: int, action: Callable[[], Measurement]) -> None:
        outcome.measure(scenario, contender, server, count, action)

    return run
