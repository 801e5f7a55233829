"""The check before a run keeps the messages it builds, and the run sends those: each row is
built once, dated when it is sent, and a run past the budget builds the rest itself."""

from __future__ import annotations

import email.utils
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from campaign_files import people, write_campaign
from hypothesis import assume, given
from hypothesis import strategies as st
from servers import StartServer

from batchmail import prebuilt
from batchmail.campaign import load_campaign
from batchmail.check import require_valid
from batchmail.clock import email_date
from batchmail.delivery import send
from batchmail.outbox import Outbox, eml_name
from batchmail.outcomes import ComposedMessage
from batchmail.prebuilt import dated
from batchmail.runner import Runner


@pytest.mark.parametrize("budget", [None, 3000])  # all kept; the first few only
def test_a_run_builds_each_message_once_and_dates_it_when_sent(
    tmp_path: Path,
    start_smtp_server: StartServer,
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
    composed_rows: list[int],
) -> None:
    if budget is not None:
        monkeypatch.setattr(prebuilt, "BUDGET", budget)  # a few messages
    composed = composed_rows
    server = start_smtp_server()
    campaign = load_campaign(write_campaign(tmp_path, people(12), server=server))
    started = datetime.now(UTC)
    result = send(campaign)
    assert result.summary.counts["sent"] == 12
    # The check builds every row; the run builds only those the check did not keep.
    assert composed[:12] == list(range(1, 13))
    rebuilt = composed[12:]
    assert rebuilt == list(range(13 - len(rebuilt), 13))  # the last rows, in order
    if budget is None:
        assert rebuilt == []
    else:
        assert 0 < len(rebuilt) < 12  # some kept, some built again
    received = {m.rcpt_tos[0]: m for m in server.messages}
    assert len(received) == 12 and len(server.messages) == 12
    for row in people(12):
        headers = received[row["email"]].data.split(b"\r\n\r\n", 1)[0].decode()
        date = email.utils.parsedate_to_datetime(headers.split("\r\nDate: ", 1)[1].split("\r\n")[0])
        assert started - timedelta(seconds=2) <= date <= datetime.now(UTC) + timedelta(seconds=2)


def test_dating_a_message_changes_its_date_alone(tmp_path: Path) -> None:
    data = (
        b"From: a@example.org\r\nSubject: Date: not this one\r\n"
        b"Date: Sat, 01 Jan 2000 00:00:00 +0000\r\nMessage-ID: <1@x>\r\n\r\nDate: nor this\r\n"
    )
    message = ComposedMessage(1, "k", None, "<1@x>", (data,), crlf_only=True, dot_lines=False)  # type: ignore[arg-type]
    later = dated(message, datetime(2026, 11, 27, 9, 5, 3, tzinfo=UTC))
    assert later.data == data.replace(
        b"Sat, 01 Jan 2000 00:00:00 +0000", b"Fri, 27 Nov 2026 09:05:03 +0000"
    )
    assert (later.crlf_only, later.dot_lines, later.key) == (True, False, "k")
    odd = ComposedMessage(1, "k", None, "<1@x>", (b"Subject: x\r\n\r\nbody\r\n",))  # type: ignore[arg-type]
    assert dated(odd, datetime.now(UTC)) is odd  # no Date header: left as it is


def test_a_run_sends_the_rows_the_check_kept_without_reading_the_file_again(
    tmp_path: Path,
) -> None:
    # A row added to the file after the check was never checked: not sent by this run.
    rows = people(5)
    campaign = load_campaign(write_campaign(tmp_path, rows, smtp="embedded"))
    kept = prebuilt.Prebuilt()
    require_valid(campaign, kept)
    with campaign.recipients.file.open("a", encoding="utf-8") as csv_file:
        csv_file.write("late@example.org,Late,C99999\n")
    outbox = Outbox(tmp_path / "out")
    summary = Runner(campaign, [outbox], None, select=lambda entry: True, prebuilt=kept).run()
    assert summary.counts["sent"] == summary.selected == 5
    written = sorted(path.name for path in (tmp_path / "out").glob("*.eml"))
    assert written == sorted(eml_name(n, row["email"]) for n, row in enumerate(rows, 1))
    again = prebuilt.Prebuilt()  # the next run checks the new row too, and sends it
    require_valid(campaign, again)
    assert again.last_row == 6


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([None, UTC])
        | st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
        | st.timezones(),
    )
)
def test_a_date_header_made_once_a_second_is_the_email_packages(moment: datetime) -> None:
    if moment.tzinfo is not None:  # a wall time a DST change skips is no instant: none of ours
        assume(
            moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None, fold=0)
            == moment.replace(tzinfo=None, fold=0)
        )
    # Twice: the second comes from the cache.
    assert email_date(moment) == email_date(moment) == email.utils.format_datetime(moment)


def test_the_budget_counts_what_the_kept_messages_hold_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short text-only messages: the objects around each one outweigh its bytes, so a budget
    # of bytes alone let memory grow with the recipients (a dry run at 100,000 rows).
    monkeypatch.setattr(prebuilt, "BUDGET", 400_000)
    path = write_campaign(tmp_path, people(2_000), smtp="embedded", html=None, text="Hi {{ name }}")
    campaign = load_campaign(path)

    def held_after_check(kept: prebuilt.Prebuilt | None) -> int:
        tracemalloc.start()
        try:
            require_valid(campaign, kept)
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    held_after_check(None)  # imports and caches, once
    without = held_after_check(None)
    kept = prebuilt.Prebuilt()
    held = held_after_check(kept) - without
    count = sum(1 for _ in kept.peek())
    assert 100 < count < 2_000  # the budget, not the rows, decided how many were kept
    # What the process holds for them stays within the budget, give or take a message.
    assert held <= 400_000 * 1.05
