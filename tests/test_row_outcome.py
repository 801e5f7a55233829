"""row_outcome: a transaction's outcome as its row's status (pure, no server)."""

from __future__ import annotations

import pytest

from batchmail.outcomes import ComposedMessage, Envelope, Outcome, RecipientRefusal, Status
from batchmail.row_outcome import for_row, still_to_reach

ANN, BOB, CC, ARCHIVE = "ann@example.org", "bob@example.org", "cc@example.org", "a@example.com"
ENVELOPE = Envelope("news@example.com", (ANN, BOB, CC, ARCHIVE), (ANN, BOB))


def refused(*pairs: tuple[str, int]) -> tuple[RecipientRefusal, ...]:
    return tuple(RecipientRefusal(address, code, f"{code} no") for address, code in pairs)


@pytest.mark.parametrize(
    ("transaction", "status", "code", "accepted"),
    [
        # Delivered: the To refusals decide; Cc/Bcc ones are shown only.
        (Outcome(Status.SENT, 250, "ok"), Status.SENT, 250, ()),
        (Outcome(Status.SENT, 250, "ok", refused((CC, 550))), Status.SENT, 250, ()),
        (Outcome(Status.SENT, 250, "ok", refused((CC, 451))), Status.SENT, 250, ()),
        (
            Outcome(Status.SENT, 250, "ok", refused((ANN, 550), (BOB, 550))),
            Status.FAILED,
            550,
            (CC, ARCHIVE),
        ),
        (
            Outcome(Status.SENT, 250, "ok", refused((BOB, 550))),
            Status.FAILED,
            550,
            (ANN, CC, ARCHIVE),
        ),
        (
            Outcome(Status.SENT, 250, "ok", refused((ANN, 550), (BOB, 451))),
            Status.DEFERRED,
            451,
            (CC, ARCHIVE),
        ),
        # Nobody accepted: the To refusals decide, whatever the others said.
        (
            Outcome(
                Status.DEFERRED,
                451,
                "x",
                refused((ANN, 550), (BOB, 550), (CC, 451), (ARCHIVE, 451)),
                transient=True,
            ),
            Status.FAILED,
            550,
            (),
        ),
        # The transaction itself ended it (the data refused): as it said.
        (Outcome(Status.FAILED, 554, "spam", refused((BOB, 451))), Status.FAILED, 554, ()),
    ],
)
def test_the_row_follows_its_own_to_addresses(
    transaction: Outcome, status: Status, code: int, accepted: tuple[str, ...]
) -> None:
    row = for_row(transaction, ENVELOPE)
    assert (row.status, row.code, row.accepted) == (status, code, accepted)
    assert row.refused == transaction.refused  # every refusal is kept, to be shown
    assert row.transient == (status is Status.DEFERRED)


def test_a_retry_goes_only_to_those_without_the_message() -> None:
    message = ComposedMessage(1, ANN, ENVELOPE, "<1@x>", (b"x\r\n",))
    rest = still_to_reach(message, (ANN, CC, ARCHIVE))
    assert rest is not None
    assert (rest.envelope.rcpt_tos, rest.envelope.to) == ((BOB,), (BOB,))
    assert still_to_reach(message, ENVELOPE.rcpt_tos) is None
    cleaned = still_to_reach(message, ("Ann@Example.ORG", CC, ARCHIVE))  # the CSV re-cased
    assert cleaned is not None and cleaned.envelope.rcpt_tos == (BOB,)
    assert still_to_reach(message, ()) is message
