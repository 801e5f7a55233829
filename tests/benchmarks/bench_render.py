"""``batchmail run --dry-run`` without the files: the whole render pipeline, discarded.

The same calls as ``batchmail.delivery.dry_run`` (check every row, then the Runner over every
recipient, no journal) with a transport that drops each message instead of writing an
``.eml`` file, so that a million recipients measure batchmail's memory and CPU rather than
the file system's cost of a million files. Run as a child so the harness measures it:

    python bench_render.py CAMPAIGN
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from batchmail.campaign import load_campaign
from batchmail.check import require_valid
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.runner import Runner
from batchmail.transport import Answered, BeforeData, CarryOn


class Discard:
    """A transport that accepts everything and keeps nothing."""

    connected = False
    window = 64  # as the dry-run outbox

    def connect(self) -> None:
        self.connected = True

    def send_batch(
        self,
        messages: Sequence[ComposedMessage],
        before_data: BeforeData,
        answered: Answered | None = None,
        carry_on: CarryOn | None = None,
    ) -> list[Outcome]:
        before_data(messages)
        return [Outcome(Status.SENT, 250, "discarded") for _ in messages]

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome:
        before_data()
        return Outcome(Status.SENT, 250, "discarded")

    def close(self) -> None:
        self.connected = False


def main() -> int:
    campaign = load_campaign(Path(sys.argv[1]))
    require_valid(campaign)
    summary = Runner(campaign, [Discard()], None, select=lambda entry: True).run()
    print(summary.attempted)
    return 0 if summary.attempted == summary.selected else 1


if __name__ == "__main__":
    sys.exit(main())
