"""The whole pipeline up to ``compose``, over every row, collecting problems instead of sending."""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from batchmail.accounts import sender_check
from batchmail.byte_sizes import describe_size
from batchmail.campaign import Campaign
from batchmail.compose import Composer
from batchmail.errors import CampaignError, Problem
from batchmail.outcomes import ComposedMessage
from batchmail.prebuilt import Prebuilt
from batchmail.problem_groups import problem_lines
from batchmail.recipients import Recipient, read_rows
from batchmail.render import Renderer
from batchmail.shared_parts import SharedParts, message_size


@dataclass(frozen=True)
class CheckReport:
    rows: int  # data rows read, good and bad
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()  # worth knowing, not stopping for

    @property
    def ok(self) -> bool:
        return not self.problems


class MessageFactory:
    """Renders and composes one recipient's message; templates compiled once per run."""

    def __init__(
        self,
        renderer: Renderer,
        composer: Composer,
        check_sender: Callable[[ComposedMessage], None] | None = None,
    ) -> None:
        self._renderer = renderer
        self._composer = composer
        self._check_sender = check_sender  # raises for a From no sender account takes

    @classmethod
    def prepare(cls, campaign: Campaign) -> MessageFactory:
        renderer = Renderer.compile(campaign)
        return cls(renderer, Composer.prepare(campaign, renderer), sender_check(campaign))

    def shared_parts(self) -> SharedParts:
        """What every message carries alike (see shared_parts)."""
        return SharedParts(self._composer.shared_parts)

    def build(
        self, recipient: Recipient, date: datetime | None = None, subject_prefix: str = ""
    ) -> ComposedMessage:
        """Raises CampaignError with the row's problems."""
        rendered = self._renderer.render(recipient)
        if subject_prefix:
            rendered = dataclasses.replace(rendered, subject=subject_prefix + rendered.subject)
        message = self._composer.compose(recipient, rendered, date=date)
        if self._check_sender is not None:
            self._check_sender(message)
        return message


def check_campaign(campaign: Campaign, keep: Prebuilt | None = None) -> CheckReport:
    """Everything `run` would do short of contacting a server, for every row. With ``keep``,
    the messages are dated now and kept there (as far as it takes them) for the run."""
    # It builds with MessageFactory, from here.
    from batchmail.build_pool import CHECK_PARALLEL_AFTER, build_all

    rows = 0
    csv_problems: list[tuple[int, tuple[Problem, ...]]] = []
    located = _RowProblems()

    def readable() -> Iterator[Recipient]:
        nonlocal rows
        for row in read_rows(campaign.recipients):
            rows += 1
            if row.recipient is None:
                csv_problems.append((row.row_number, located(row.row_number, row.problems)))
            else:
                yield row.recipient

    # One fixed date unless the messages are kept: the check is about content, and this
    # keeps it deterministic. Template problems raise CampaignError before any row is read.
    fixed = datetime(2000, 1, 1, tzinfo=UTC)
    built_problems: list[tuple[int, tuple[Problem, ...]]] = []
    too_large = _SizeWarnings(campaign)
    for recipient, built in build_all(
        campaign,
        readable(),
        (lambda: datetime.now(UTC)) if keep else (lambda: fixed),
        keep_bytes=keep.wants_more if keep else False,
        parallel_after=CHECK_PARALLEL_AFTER,
        squeezed=True,  # kept for the run without the attachments all rows share
    ):
        if isinstance(built, tuple):
            built_problems.append((recipient.row_number, located(recipient.row_number, built)))
            continue
        if isinstance(built, int):  # the size of a message not kept
            too_large.check(recipient.row_number, built)
            continue
        too_large.check(recipient.row_number, message_size(built))
        if keep is not None:
            keep.keep(built)
    problems = [
        problem
        for _, row_problems in heapq.merge(csv_problems, built_problems, key=lambda p: p[0])
        for problem in row_problems
    ]
    if rows == 0:
        problems.append(
            Problem(
                campaign.recipients.file.name,
                "no recipients: the file has a header row but no data rows",
            )
        )
    warnings = (*campaign_warnings(campaign, rows), *too_large.warnings)
    return CheckReport(rows, tuple(problems), warnings)


class _SizeWarnings:
    """A warning for each row whose message is over ``message.max_size``: the same text for
    every row (the size is its detail), so that they are told as one line."""

    def __init__(self, campaign: Campaign) -> None:
        self._limit = campaign.message.max_size
        self._where = campaign.recipients.file.name
        self._text = (
            f"the message is larger than message.max_size ({describe_size(self._limit)}): "
            "many servers refuse it (Gmail and Microsoft 365 over 25 MB; attachments count "
            "a third more, base64-encoded)"
        )
        self.warnings: list[Problem] = []

    def check(self, row: int, size: int) -> None:
        if self._limit and size > self._limit:
            self.warnings.append(
                Problem(f"{self._where}, row {row}", self._text, row, f"{describe_size(size)}")
            )


class _RowProblems:
    """Sets each problem's row, and keeps one copy of each message text: a typo on every
    row of a large CSV is one string held once, not once per row."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def __call__(self, row: int, problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
        return tuple(
            dataclasses.replace(
                problem,
                row=row if problem.row is None else problem.row,
                message=self._texts.setdefault(problem.message, problem.message),
            )
            for problem in problems
        )


def require_valid(
    campaign: Campaign, keep: Prebuilt | None = None, note: Callable[[str], None] | None = None
) -> int:
    """Raise CampaignError unless every row is good; return the number of rows. ``keep``:
    see check_campaign. ``note`` is told the warnings about rows (a message over
    message.max_size); the campaign's own warnings are the caller's (see run_warnings)."""
    report = check_campaign(campaign, keep)
    if not report.ok:
        raise CampaignError(report.problems)
    if note is not None:
        for line in problem_lines([w for w in report.warnings if w.row is not None]):
            note(f"warning: {line}")
    return report.rows


# Past this many recipients a campaign is bulk mail: Gmail and Yahoo want one-click
# unsubscribe (RFC 8058) from bulk senders.
BULK_RECIPIENTS = 1_000


def campaign_warnings(campaign: Campaign, recipients: int, exact: bool = True) -> list[Problem]:
    """What is worth a warning in a campaign of ``recipients`` rows (never an error);
    ``exact=False``: the rows were counted only as far as the warnings need."""
    if recipients > BULK_RECIPIENTS and campaign.message.unsubscribe is None:
        count = f" ({recipients:,})" if exact else ""
        return [
            Problem(
                campaign.where("message"),
                f"more than {BULK_RECIPIENTS:,} recipients{count} and no `unsubscribe`: "
                "Gmail and Yahoo require one-click unsubscribe (RFC 8058) from bulk senders "
                "and may refuse or spam-folder this mail; add "
                '`unsubscribe: {url: "https://..."}` under message',
            )
        ]
    return []


def run_warnings(campaign: Campaign) -> list[Problem]:
    """``campaign_warnings`` before a run, reading no more of the CSV than they need."""
    if campaign.message.unsubscribe is not None:
        return []
    rows = 0
    try:
        for _ in read_rows(campaign.recipients):
            rows += 1
            if rows > BULK_RECIPIENTS:
                break
    except CampaignError:
        return []  # the run's own check reports it
    return campaign_warnings(campaign, rows, exact=False)
