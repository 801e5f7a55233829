"""The whole pipeline up to ``compose``, over every row, collecting problems instead of sending."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from batchmail.campaign import Campaign
from batchmail.compose import Composer
from batchmail.errors import CampaignError, Problem
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import Recipient, read_rows
from batchmail.render import Renderer


@dataclass(frozen=True)
class CheckReport:
    rows: int  # data rows read, good and bad
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class MessageFactory:
    """Renders and composes one recipient's message; templates compiled once per run."""

    def __init__(self, renderer: Renderer, composer: Composer) -> None:
        self._renderer = renderer
        self._composer = composer

    @classmethod
    def prepare(cls, campaign: Campaign) -> MessageFactory:
        renderer = Renderer.compile(campaign)
        return cls(renderer, Composer.prepare(campaign, renderer))

    def build(
        self, recipient: Recipient, date: datetime | None = None, subject_prefix: str = ""
    ) -> ComposedMessage:
        """Raises CampaignError with the row's problems."""
        rendered = self._renderer.render(recipient)
        if subject_prefix:
            rendered = dataclasses.replace(rendered, subject=subject_prefix + rendered.subject)
        return self._composer.compose(recipient, rendered, date=date)


def check_campaign(campaign: Campaign) -> CheckReport:
    """Everything `run` would do short of contacting a server, for every row."""
    factory = MessageFactory.prepare(campaign)  # template problems raise CampaignError
    problems: list[Problem] = []
    rows = 0
    # One fixed date: the check is about content, and this keeps it deterministic.
    date = datetime(2000, 1, 1, tzinfo=UTC)
    for row in read_rows(campaign.recipients):
        rows += 1
        if row.recipient is None:
            problems.extend(row.problems)
            continue
        try:
            factory.build(row.recipient, date)
        except CampaignError as exc:
            problems.extend(exc.problems)
    if rows == 0:
        problems.append(
            Problem(
                campaign.recipients.file.name,
                "no recipients: the file has a header row but no data rows",
            )
        )
    return CheckReport(rows, tuple(problems))


def require_valid(campaign: Campaign) -> int:
    """Raise CampaignError unless every row is good; return the number of rows."""
    report = check_campaign(campaign)
    if not report.ok:
        raise CampaignError(report.problems)
    return report.rows
