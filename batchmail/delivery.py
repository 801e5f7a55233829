"""Set up a run: validate, lock, journal, credentials, and the transport (a server, the
embedded sink, or the dry-run outbox); then hand over to the Runner."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchmail.addresses import AddressError, parse_address_list
from batchmail.campaign import Campaign, SendConfig
from batchmail.check import MessageFactory, require_valid
from batchmail.credentials import resolve_password
from batchmail.errors import CampaignChanged, CampaignError, Problem, RunAborted, RunLocked
from batchmail.fingerprint import campaign_fingerprint, changed_parts, encode
from batchmail.journal import Journal
from batchmail.outbox import Outbox
from batchmail.outcomes import Envelope
from batchmail.recipients import read_recipients
from batchmail.report import DONE, count_statuses, journal_path, recipient_statuses
from batchmail.runner import Progress, Runner, RunSummary, Selector, select_pending
from batchmail.sink import embedded_sink
from batchmail.smtp import SmtpSession


@dataclass(frozen=True)
class RunResult:
    summary: RunSummary
    all_sent: bool  # every CSV recipient's journalled status is `sent` (always True for a dry run)
    delivered_to: str  # where the messages went: "host:port", the sink's Maildir, or the outbox


def dry_run(campaign: Campaign, out_dir: Path | None, progress: Progress | None) -> RunResult:
    """Write each message as a .eml file plus manifest.csv; no server, no journal."""
    require_valid(campaign)
    directory = out_dir or campaign.state_dir / "outbox"
    outbox = Outbox(directory)
    runner = Runner(campaign, [outbox], None, select=lambda entry: True, progress=progress)
    return RunResult(runner.run(), True, str(directory))


def send(
    campaign: Campaign,
    select: Selector = select_pending,
    progress: Progress | None = None,
    allow_changed: bool = False,
    debug: Callable[[str], None] | None = None,
) -> RunResult:
    """`run` (pending recipients) or `resend` (with a resend selector)."""
    require_valid(campaign)
    with campaign_lock(campaign), Journal.open(journal_path(campaign)) as journal:
        _check_fingerprint(campaign, journal, allow_changed)
        with _transports(campaign, debug) as (transports, delivered_to):
            runner = Runner(campaign, transports, journal, select=select, progress=progress)
            summary = runner.run()
        counts = count_statuses(recipient_statuses(campaign, journal))
    all_sent = sum(counts.values()) == sum(counts[status] for status in DONE)
    return RunResult(summary, all_sent, delivered_to)


TEST_PREFIX = "[TEST] "


def test_send(
    campaign: Campaign, address: str, limit: int, debug: Callable[[str], None] | None = None
) -> RunResult:
    """The first ``limit`` rows' messages exactly as they would go, subject prefixed [TEST],
    delivered only to ``address``. The journal is not touched."""
    require_valid(campaign)
    test_to = _one_address(address)
    factory = MessageFactory.prepare(campaign)
    messages = []
    for recipient in read_recipients(campaign.recipients):
        if len(messages) >= limit:
            break
        message = factory.build(recipient, datetime.now(UTC), subject_prefix=TEST_PREFIX)
        envelope = Envelope(message.envelope.mail_from, (test_to,))
        messages.append(dataclasses.replace(message, envelope=envelope))
    summary = RunSummary(selected=len(messages))
    with _transports(dataclasses.replace(campaign, send=_one_session(campaign)), debug) as (
        (transport, *_),
        delivered_to,
    ):
        transport.connect()
        try:
            for outcome in transport.send_batch(messages, lambda going: None):
                summary.counts[outcome.status.value] += 1
        finally:
            transport.close()
    return RunResult(
        summary, summary.counts["sent"] == len(messages), f"{test_to} via {delivered_to}"
    )


def _one_address(text: str) -> str:
    try:
        addresses = parse_address_list(text)
    except AddressError as exc:
        raise CampaignError([Problem("--test-to", str(exc))]) from exc
    if len(addresses) != 1:
        raise CampaignError([Problem("--test-to", f"{text!r}: give exactly one address")])
    return addresses[0].addr_spec


def _one_session(campaign: Campaign) -> SendConfig:
    return dataclasses.replace(campaign.send, sessions=1)


def _check_fingerprint(campaign: Campaign, journal: Journal, allow_changed: bool) -> None:
    """Refuse to carry on a started campaign whose content changed, unless allowed."""
    current = campaign_fingerprint(campaign)
    recorded = journal.get_meta("fingerprint")
    started = any(journal.counts().values())
    if recorded is not None and started and not allow_changed:
        changed = changed_parts(recorded, current)
        if changed:
            since = journal.get_meta("fingerprint_at") or "the first send"
            raise CampaignChanged(
                f"{campaign.path.name}: the campaign changed since messages were first sent "
                f"({since}): {', '.join(changed)}. Recipients already sent got the old content. "
                "To send the rest with the new content, run again with --allow-changed; to start "
                "a separate campaign, give it another `name:`."
            )
    if recorded != encode(current):
        journal.set_meta("fingerprint", encode(current))
        journal.set_meta("fingerprint_at", datetime.now(UTC).isoformat(timespec="seconds"))


@contextlib.contextmanager
def _transports(
    campaign: Campaign, debug: Callable[[str], None] | None = None
) -> Iterator[tuple[list[SmtpSession], str]]:
    """One SMTP session per ``send.sessions``, and where they deliver. ``debug`` receives
    the SMTP dialogue, AUTH redacted."""
    config = campaign.smtp
    count = campaign.send.sessions
    window = campaign.send.window
    if config.embedded:
        maildir = campaign.state_dir / "sink"
        with embedded_sink(maildir) as (host, port):
            sessions = [
                SmtpSession(config, None, host=host, port=port, window=window, debug=debug)
                for _ in range(count)
            ]
            yield sessions, f"the embedded server's Maildir {maildir}"
        return
    password = resolve_password(config, campaign.path.name)
    sessions = [SmtpSession(config, password, window=window, debug=debug) for _ in range(count)]
    yield sessions, f"{config.host}:{config.port}"


@contextlib.contextmanager
def campaign_lock(campaign: Campaign) -> Iterator[None]:
    """One run or resend per campaign at a time. The OS drops the lock if the process dies."""
    path = campaign.state_dir / "run.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RunAborted(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"{campaign.path.name}: another batchmail run is sending this campaign "
                f"(lock {path}); wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)
