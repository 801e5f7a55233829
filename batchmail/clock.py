"""The wall clock for journal timestamps, messages' Date headers and daily limits.

``BATCHMAIL_NOW`` (an ISO 8601 time, e.g. ``2026-01-01T09:00:00+00:00``) replaces it. It is
for tests only: it lets a test run a campaign "tomorrow" to check a daily limit.
"""

from __future__ import annotations

import functools
import math
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

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


def email_date(moment: datetime) -> str:
    """``email.utils.format_datetime(moment)`` for a real instant (as ``datetime.now``
    gives, not a wall time a DST change skips): a Date header's value (RFC 5322, to the
    second), made once a second for the messages of a run that share it (6 us each)."""
    offset = moment.utcoffset()
    if offset is None:
        return format_datetime(moment)
    return _email_date(math.floor(moment.timestamp()), offset)


@functools.lru_cache(maxsize=4)
def _email_date(second: int, offset: timedelta) -> str:
    return format_datetime(datetime.fromtimestamp(second, timezone(offset)))
