"""The errors batchmail reports to its user.

Every message here is meant to be read by a person: it names the file, key,
row or column at fault and, where there is one, the next step.

    BatchmailError                 base; ``str(exc)`` is the user-facing text
     ├── CampaignError             bad campaign file, CSV, template or row (exit 2);
     │                             carries every ``Problem`` found, not just the first
     ├── RunAborted                the run cannot go on: authentication refused,
     │                             server unreachable, journal unwritable (exit 3)
     ├── RunLocked                 another run holds the campaign's lock (exit 2)
     └── CampaignChanged           the campaign's content changed since its first send
                                   and --allow-changed was not given (exit 2)

Per-recipient SMTP results are not exceptions: they are ``outcomes.Outcome`` values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    where: str  # e.g. "welcome.csv, row 42, column email" or "welcome.yaml, smtp.port, line 6"
    message: str
    # The CSV data row it concerns, when it is a row's problem (check sets it): problems
    # whose text is the same but for the row are then told once (see problem_groups).
    row: int | None = None
    # A finer location inside ``where`` that differs from row to row (a byte offset), kept
    # out of ``message`` so that the same problem on many rows still reads the same.
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.where}, {self.detail}" if self.detail else self.where
        return f"{where}: {self.message}" if where else self.message


class BatchmailError(Exception):
    """Base of every error batchmail reports to its user."""

    exit_code = 1
    transient = False  # True where trying again later may work (a server unreachable now)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CampaignError(BatchmailError):
    """The campaign, its CSV, templates or attachments are not usable; nothing was sent."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem | str]) -> None:
        self.problems: tuple[Problem, ...] = tuple(
            p if isinstance(p, Problem) else Problem("", p) for p in problems
        )
        if not self.problems:
            raise ValueError("CampaignError needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))


class RunAborted(BatchmailError):
    """The run stopped before its end for a reason that concerns every recipient."""

    exit_code = 3


class RunLocked(BatchmailError):
    """Another batchmail process is sending this campaign."""

    exit_code = 2


class CampaignChanged(BatchmailError):
    """The campaign file, a template or a shared attachment changed under a half-finished run."""

    exit_code = 2
