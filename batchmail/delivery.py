"""Set up a run: validate, lock, journal, credentials, and the transports (a server, the
embedded sink, or the dry-run outbox); then hand over to the Runner: one per sender account
(see ``accounts``), one after the other, sharing the journal."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchmail import accounts, campaign_id
from batchmail.addresses import AddressError, parse_address_list
from batchmail.campaign import Campaign, SendConfig, SmtpConfig
from batchmail.check import MessageFactory, require_valid
from batchmail.credentials import resolve_secret
from batchmail.errors import CampaignChanged, CampaignError, Problem, RunAborted, RunLocked
from batchmail.fingerprint import campaign_fingerprint, changed_parts, encode
from batchmail.inputs import refuse_input
from batchmail.journal import Journal
from batchmail.outbox import MANIFEST_NAME, Outbox
from batchmail.outcomes import ComposedMessage, Envelope, Outcome
from batchmail.prebuilt import Prebuilt
from batchmail.private_files import make_private_dir
from batchmail.recipients import read_recipients
from batchmail.report import DONE, count_statuses, journal_path, recipient_statuses, selection
from batchmail.runner import Progress, Runner, RunSummary, Selector, select_pending
from batchmail.smtp import SmtpSession
from batchmail.stop import StopRequest


@dataclass(frozen=True)
class RunResult:
    summary: RunSummary
    all_sent: bool  # every CSV recipient's journalled status is `sent` (always True for a dry run)
    delivered_to: str  # where the messages went: "host:port", the sink's Maildir, or the outbox
    # Which daily limit stopped the run ("daily limit of 3 messages reached"), or "".
    capped_by: str = ""
    # Every CSV recipient's status after the run, counted (see report.STATUSES).
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    # Per status, the CSV recipients the run did not take (or found on an exclusion list).
    left_alone: Counter[str] = dataclasses.field(default_factory=Counter)


def dry_run(campaign: Campaign, out_dir: Path | None, progress: Progress | None) -> RunResult:
    """Write each message as a .eml file plus manifest.csv; no server, no journal."""
    campaign = campaign_id.with_id(campaign)
    prebuilt = Prebuilt()
    require_valid(campaign, prebuilt, progress.note if progress else None)
    campaign_id.keep(campaign)
    directory = out_dir or campaign.state_dir / "outbox"
    refuse_input(campaign, directory / MANIFEST_NAME, "--out")
    outbox = Outbox(directory)
    if progress is not None:
        progress = _OneBar(progress)
        progress.start(selection(campaign, None, lambda entry: True).to_send)
    runner = Runner(
        campaign, [outbox], None, select=lambda entry: True, progress=progress, prebuilt=prebuilt
    )
    return RunResult(runner.run(), True, str(directory))


def send(
    campaign: Campaign,
    select: Selector = select_pending,
    progress: Progress | None = None,
    allow_changed: bool = False,
    debug: Callable[[str], None] | None = None,
    allow_damaged: bool = False,
    stop: StopRequest | None = None,
) -> RunResult:
    """`run` (pending recipients) or `resend` (with a resend selector); ``allow_damaged``:
    go on with a damaged journal (see journal_checks); ``stop``: once it is requested, what
    is on the wire is finished and nothing more is sent."""
    campaign = campaign_id.with_id(campaign)
    # With several sender accounts each runner goes through every row: build them again.
    prebuilt = Prebuilt() if len(campaign.smtp_accounts) == 1 else None
    require_valid(campaign, prebuilt, progress.note if progress else None)
    campaign_id.keep(campaign)
    journal_file = journal_path(campaign)
    with campaign_lock(campaign), Journal.open(journal_file, allow_damaged) as journal:
        _check_fingerprint(campaign, journal, allow_changed)
        chosen = selection(campaign, journal, select)
        if chosen.to_send:
            if progress is not None:
                progress = _OneBar(progress)
                progress.start(chosen.to_send)  # excluded rows are not attempted: not counted
            with _routes(campaign, debug) as routes:
                summary, capped_by = _run_accounts(
                    campaign, routes, journal, select, progress, prebuilt, stop
                )
            where = _where(routes)
        else:
            # No server is asked for a password or a session it would not be given work in
            # (rows on an exclusion list alone are no work).
            summary, capped_by, where = RunSummary(), "", ""
        counts = count_statuses(recipient_statuses(campaign, journal))
    summary.skipped = summary.skipped or sum(counts.values()) - summary.selected
    all_sent = sum(counts.values()) == sum(counts[status] for status in DONE)
    return RunResult(summary, all_sent, where, capped_by, counts, chosen.left_alone)


@dataclass(frozen=True)
class _Route:
    """One sender account and its sessions (``send.sessions`` of them)."""

    account: SmtpConfig
    sessions: list[SmtpSession]
    where: str  # "host:port", or the embedded sink's Maildir


def _run_accounts(
    campaign: Campaign,
    routes: list[_Route],
    journal: Journal,
    select: Selector,
    progress: Progress | None,
    prebuilt: Prebuilt | None = None,
    stop: StopRequest | None = None,
) -> tuple[RunSummary, str]:
    """A runner per account, each sending only the messages whose From it matches, with its
    own rate and daily limit (its own messages counted); the summaries merged, and which
    daily limits stopped the run."""
    several = len(routes) > 1
    every = campaign.smtp_accounts
    summaries: list[RunSummary] = []
    capped: list[tuple[SmtpConfig, int, datetime]] = []
    for index, route in enumerate(routes):
        own = accounts.with_own_limits(campaign, route.account)

        def sent_since(moment: str, index: int = index) -> tuple[int, str | None]:
            return accounts.usage(every, index, journal.sent_since_by_sender(moment))

        runner = Runner(
            own,
            route.sessions,
            journal,
            select=select,
            progress=progress,
            accept=accounts.owned_by(every, index) if several else None,
            sent_since=sent_since if several else None,
            prebuilt=prebuilt,
            stop=stop,
            sleep=stop.sleep if stop is not None else time.sleep,  # waits end on a stop
        )
        summary = runner.run()
        summaries.append(summary)
        if summary.capped_until is not None:
            capped.append((route.account, own.send.daily_limit, summary.capped_until))
    return _merged(summaries), accounts.capped_note(capped, several)


def _merged(summaries: list[RunSummary]) -> RunSummary:
    """One summary for runners that ran one after the other over the same CSV: the first
    counted every recipient the run set out to send (the others found some sent already)."""
    first = summaries[0]
    if len(summaries) == 1:
        return first
    counts: Counter[str] = Counter()
    for summary in summaries:
        counts.update(summary.counts)
    capped = [s.capped_until for s in summaries if s.capped_until is not None]
    return dataclasses.replace(
        first,
        counts=counts,
        suppressed=sum(summary.suppressed for summary in summaries),
        capped_until=min(capped, default=None),
    )


class _OneBar:
    """Progress for runners one after the other: the first ``start`` (the whole run's total,
    given before any runner starts) and everything else each reports."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._started = False

    def start(self, total: int) -> None:
        if not self._started:
            self._started = True
            self._progress.start(total)

    def outcome(self, message: ComposedMessage, outcome: Outcome) -> None:
        self._progress.outcome(message, outcome)

    def note(self, text: str) -> None:
        self._progress.note(text)


def _where(routes: list[_Route]) -> str:
    return " and ".join(dict.fromkeys(route.where for route in routes))


TEST_PREFIX = "[TEST] "


def test_send(
    campaign: Campaign, address: str, limit: int, debug: Callable[[str], None] | None = None
) -> RunResult:
    """The first ``limit`` rows' messages exactly as they would go, subject prefixed [TEST],
    delivered only to ``address``. The journal is not touched."""
    campaign = campaign_id.for_test(campaign)
    require_valid(campaign)
    test_to = _one_address(address)
    factory = MessageFactory.prepare(campaign)
    messages: list[ComposedMessage] = []
    for recipient in read_recipients(campaign.recipients):
        if len(messages) >= limit:
            break
        message = factory.build(recipient, datetime.now(UTC), subject_prefix=TEST_PREFIX)
        envelope = Envelope(message.envelope.mail_from, (test_to,))
        messages.append(dataclasses.replace(message, envelope=envelope))
    summary = RunSummary(selected=len(messages))
    every = campaign.smtp_accounts
    used: list[_Route] = []
    with _routes(dataclasses.replace(campaign, send=_one_session(campaign)), debug) as routes:
        for index, route in enumerate(routes):
            mine = [
                message
                for message in messages
                if len(routes) == 1
                or accounts.account_for(every, accounts.sender(message)) == index
            ]
            if not mine:
                continue
            used.append(route)
            (transport,) = route.sessions
            transport.connect()
            try:
                for outcome in transport.send_batch(mine, lambda going: None):
                    summary.counts[outcome.status.value] += 1
            finally:
                transport.close()
    return RunResult(
        summary, summary.counts["sent"] == len(messages), f"{test_to} via {_where(used)}"
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
    current = encode(campaign_fingerprint(campaign))
    recorded = journal.get_meta("fingerprint")
    started = any(journal.counts().values())
    if recorded is not None and started and not allow_changed:
        changed = changed_parts(recorded, campaign)
        if changed:
            since = journal.get_meta("fingerprint_at") or "the first send"
            raise CampaignChanged(
                f"{campaign.path.name}: the campaign changed since messages were first sent "
                f"({since}): {', '.join(changed)}. Recipients already sent got the old content. "
                "To send the rest with the new content, run again with --allow-changed; to start "
                "a separate campaign, give it another `name:`."
            )
    if recorded != current:
        journal.set_meta("fingerprint", current)
        journal.set_meta("fingerprint_at", datetime.now(UTC).isoformat(timespec="seconds"))


@contextlib.contextmanager
def _routes(
    campaign: Campaign, debug: Callable[[str], None] | None = None
) -> Iterator[list[_Route]]:
    """Each sender account with ``send.sessions`` SMTP sessions. Every account's password or
    token is resolved here, before the first message goes anywhere. ``debug`` receives the
    SMTP dialogue, AUTH redacted."""
    count = campaign.send.sessions
    window = campaign.send.window
    every = campaign.smtp_accounts
    if every[0].embedded:
        config = every[0]
        maildir = campaign.state_dir / "sink"
        from batchmail.sink import embedded_sink  # aiosmtpd: imported only when it serves

        with embedded_sink(maildir) as (host, port):
            sessions = [
                SmtpSession(config, None, host=host, port=port, window=window, debug=debug)
                for _ in range(count)
            ]
            yield [_Route(config, sessions, f"the embedded server's Maildir {maildir}")]
        return
    secrets = [resolve_secret(account, campaign.path.name) for account in every]
    yield [
        _Route(
            account,
            [SmtpSession(account, secret, window=window, debug=debug) for _ in range(count)],
            f"{account.host}:{account.port}",
        )
        for account, secret in zip(every, secrets, strict=True)
    ]


@contextlib.contextmanager
def campaign_lock(campaign: Campaign) -> Iterator[None]:
    """One run or resend per campaign at a time. The OS drops the lock if the process dies."""
    path = campaign.state_dir / "run.lock"
    try:
        make_private_dir(path.parent)
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
