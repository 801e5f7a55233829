"""The wall clock for journal timestamps and daily limits.

``BATCHMAIL_NOW`` (an ISO 8601 time, e.g. ``2026-01-01T09:00:00+00:00``) replaces it. It is
for tests only: it lets a test run a campaign "tomorrow" to check a daily limit.
"""

from __future__ import annotations

import functools
import os
import time
from datetime import UTC, datetime

from batchmail.errors import CampaignError, Problem

NOW_VARIABLE = "BATCHMAIL_NOW"


def now() -> datetime:
    fixed = os.environ.get(NOW_VARIABLE)
    if not fixed:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(fixed)
    except ValueError as exc:
        raise CampaignError([Problem(NOW_VARIABLE, f"not an ISO 8601 time: {fixed!r}")]) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def timestamp() -> str:
    """Now, as stored in the journal: ISO 8601 in UTC, to the second."""
    if os.environ.get(NOW_VARIABLE):
        return now().astimezone(UTC).isoformat(timespec="seconds")
    return _second_text(int(time.time()))


@functools.lru_cache(maxsize=1)  # the journal asks twice a message: once a second it changes
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
