"""Messages without the attachments every row shares: squeezed for carrying and keeping, the
same bytes again when expanded, and a run that sends them exactly as built."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from campaign_files import people, write_campaign
from servers import StartServer

from batchmail import campaign_id, prebuilt
from batchmail.build_pool import build_all
from batchmail.campaign import Campaign, load_campaign
from batchmail.check import MessageFactory
from batchmail.delivery import send
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import read_recipients
from batchmail.shared_parts import SharedParts, Squeezed, expand

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def attachment_campaign(tmp_path: Path, rows: list[dict[str, str]], **kwargs: object) -> Path:
    """Rows with a 100 KB file every message carries, a small one, and one of their own."""
    (tmp_path / "guide.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(100_000))
    (tmp_path / "small.txt").write_text("a small shared note\n")
    for row in rows:
        (tmp_path / f"{row['code']}.txt").write_text(f"{row['name']}'s own sheet\n" * 50)
    message = {"attachments": ["guide.pdf", "small.txt", "{{ code }}.txt"]}
    if "server" not in kwargs:
        kwargs["smtp"] = "embedded"
    return write_campaign(tmp_path, rows, message=message, **kwargs)  # type: ignore[arg-type]


def built(campaign_path: Path) -> tuple[SharedParts, list[ComposedMessage]]:
    return built_from(load_campaign(campaign_path))


def built_from(campaign: Campaign) -> tuple[SharedParts, list[ComposedMessage]]:
    factory = MessageFactory.prepare(campaign)
    messages = [factory.build(r, WHEN) for r in read_recipients(campaign.recipients)]
    return factory.shared_parts(), messages


def test_squeezing_cuts_out_the_large_shared_part_and_expanding_restores_every_byte(
    tmp_path: Path,
) -> None:
    rows = people(20)
    rows[3]["name"] = "Zoë Ünïcode"  # a non-ASCII display name: an encoded word
    rows[5]["name"] = "A name long enough " * 6  # a folded To header
    shared, messages = built(attachment_campaign(tmp_path, rows))
    guide, small = shared._parts  # noqa: SLF001
    assert len(guide) > 130_000 and len(small) < 1_000
    for message in messages:
        squeezed = shared.squeeze(message)
        assert isinstance(squeezed, Squeezed)
        assert squeezed.pieces.count(0) == 1 and 1 not in squeezed.pieces  # small: left in
        assert squeezed.size == len(message.data) - len(guide) < 20_000
        resolved = shared.resolve(squeezed)
        assert any(piece is guide for piece in resolved.pieces)  # by reference, not a copy
        assert expand(resolved) == message  # the same bytes, flags and envelope
        with pytest.raises(ValueError, match="resolved"):
            expand(squeezed)


def test_a_message_without_the_shared_part_is_left_as_it_is(tmp_path: Path) -> None:
    shared, messages = built(attachment_campaign(tmp_path, people(2)))
    other = SharedParts([b"x" * 10_000])
    assert other.squeeze(messages[0]) is messages[0]
    # A part cut short is not the part: only the whole of it is cut out.
    guide, _ = shared._parts  # noqa: SLF001
    partial = SharedParts([guide + b"more"])
    assert partial.squeeze(messages[0]) is messages[0]


def test_workers_hand_messages_back_without_the_shared_part(tmp_path: Path) -> None:
    # A worker's message holds its own copy of the PDF; the parent's comes back with the
    # parent's copy in its place (the very object), the bytes as the parent would build them.
    path = attachment_campaign(tmp_path, people(12))
    shared, expected = built(path)
    guide, _ = shared._parts  # noqa: SLF001
    campaign = load_campaign(path)
    rows = read_recipients(campaign.recipients)
    results = list(
        build_all(campaign, rows, lambda: WHEN, workers=2, parallel_after=2, squeezed=True)
    )
    assert [recipient.row_number for recipient, _ in results] == list(range(1, 13))
    copies = []
    for (_, item), message in zip(results, expected, strict=True):
        assert isinstance(item, Squeezed) and item.size < 20_000
        copies += [piece for piece in item.pieces if piece == guide]
        assert expand(item) == message
    # Rows 1 and 2 were built in the parent, the rest by workers: one object for all twelve.
    assert len(copies) == 12 and len({id(copy) for copy in copies}) == 1


def test_a_run_sends_squeezed_kept_messages_as_they_were_built(
    tmp_path: Path,
    start_smtp_server: StartServer,
    monkeypatch: pytest.MonkeyPatch,
    composed_rows: list[int],
) -> None:
    # Kept squeezed, 30 messages with a 100 KB attachment fit a budget of 200 KB: the check
    # builds each row, the run none.
    monkeypatch.setattr(prebuilt, "BUDGET", 200_000)
    server = start_smtp_server()
    path = attachment_campaign(tmp_path, people(30), server=server)
    result = send(load_campaign(path))
    assert result.summary.counts["sent"] == 30
    assert composed_rows == list(range(1, 31))  # built once each, by the check
    _, expected = built_from(campaign_id.with_id(load_campaign(path)))  # the run's id
    received = {m.rcpt_tos[0]: m.data for m in server.messages}
    assert len(server.messages) == 30
    for message in expected:
        got = received[message.envelope.rcpt_tos[0]]
        assert without_date(got) == without_date(message.data)


def without_date(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    dates = [
        i for i, line in enumerate(itertools.takewhile(bool, lines)) if line.startswith(b"Date: ")
    ]
    assert len(dates) == 1
    del lines[dates[0]]
    return b"\r\n".join(lines)
