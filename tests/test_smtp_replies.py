"""The pure SMTP pieces: replies parsed from bytes, and what a transaction's replies add up to
(smtp_replies), and a message in wire form (smtp_envelope). No server needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import make_message

from batchmail.outcomes import RecipientRefusal, Status
from batchmail.smtp_envelope import crlf_lines, dot_stuff, transaction
from batchmail.smtp_replies import (
    LOST_AFTER_DATA,
    LOST_BEFORE_DATA,
    ProtocolError,
    Reply,
    ReplyReader,
    Sent,
    TransactionReplies,
)
from batchmail.transport import NOT_SENT

LOST = "connection reset"


def reply(line: str) -> Reply:
    (parsed,) = ReplyReader().feed(line.encode() + b"\r\n")
    return parsed


def replies_for(
    *lines: str, rcpts: tuple[str, ...] = ("a@x.org",), chunking: bool = True, reset: bool = False
) -> TransactionReplies:
    state = TransactionReplies(rcpts, reset=reset, chunking=chunking)
    for line in lines:
        if line == "END":
            state.expect_end()
            continue
        state.take(reply(line))
    return state


# --- ReplyReader ------------------------------------------------------------------------------


def test_replies_are_cut_at_line_ends_and_multiline_replies_joined() -> None:
    reader = ReplyReader()
    assert reader.feed(b"250-smtp.test\r\n250-PIPE") == []
    assert reader.feed(b"LINING\r\n250 HELP\r\n354 go") == [
        Reply(250, ("smtp.test", "PIPELINING", "HELP"))
    ]
    assert reader.feed(b" ahead\r\n") == [Reply(354, ("go ahead",))]


def test_reply_text_is_what_smtplib_makes_of_it() -> None:
    parsed = reply("550-5.1.1 no such\r\n550 5.1.1   user ")
    assert parsed.text == "5.1.1 no such 5.1.1   user"
    assert parsed.wire_lines() == ["550-5.1.1 no such", "550 5.1.1   user"]


def test_reader_knows_when_part_of_a_reply_is_in() -> None:
    reader = ReplyReader()
    reader.feed(b"250-first line\r\n")
    assert reader.pending
    reader.feed(b"250 last\r\n25")
    assert reader.pending
    reader.feed(b"0 OK\r\n")
    assert not reader.pending


def test_a_bare_code_and_a_bare_lf_are_replies() -> None:
    assert ReplyReader().feed(b"250\n221 bye\n") == [Reply(250, ("",)), Reply(221, ("bye",))]


@pytest.mark.parametrize("garbage", [b"hello\r\n", b"25 OK\r\n", b"250+OK\r\n", b"x" * 9000])
def test_what_is_not_a_reply_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyReader().feed(garbage)


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1))
def test_replies_come_out_the_same_however_the_bytes_are_split(cuts: list[int]) -> None:
    stream = b"250 2.1.0 Ok\r\n250-a\r\n250 b\r\n554 5.5.1 Error: no valid recipients\r\n"
    reader, got, position = ReplyReader(), [], 0
    for cut in cuts * 20:
        got += reader.feed(stream[position : position + cut])
        position += cut
    got += reader.feed(stream[position:])
    assert [r.code for r in got] == [250, 250, 554]
    assert got[1].lines == ("a", "b")


# --- TransactionReplies: one transaction's outcome ----------------------------------------------


def test_every_reply_accepting_is_sent() -> None:
    state = replies_for("250 Ok", "250 Ok", "250 2.0.0 Ok: queued as ABC")
    assert state.answered
    outcome = state.outcome(Sent.DATA)
    assert (outcome.status, outcome.code, outcome.reply) == (
        Status.SENT,
        250,
        "2.0.0 Ok: queued as ABC",
    )


def test_mail_refused_fails_whatever_follows() -> None:
    state = replies_for("550 5.7.1 sender refused", "503 need MAIL", "503 need MAIL")
    outcome = state.outcome(Sent.DATA)
    assert (outcome.status, outcome.code, outcome.transient) == (Status.FAILED, 550, False)


def test_mail_deferred_is_transient() -> None:
    outcome = replies_for("451 4.3.0 later", "503 x", "503 x").outcome(Sent.DATA)
    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, 451, True)


def test_some_recipients_refused_is_sent_with_the_refusals() -> None:
    state = replies_for(
        "250 Ok", "250 Ok", "550 5.1.1 no such user", "250 Ok queued", rcpts=("a@x", "b@x")
    )
    outcome = state.outcome(Sent.DATA)
    assert outcome.status is Status.SENT
    assert outcome.refused == (RecipientRefusal("b@x", 550, "5.1.1 no such user"),)


def test_every_recipient_refused_is_never_sent_even_if_bdat_says_250() -> None:
    # RFC 2920: with every RCPT refused the DATA/BDAT reply must not be believed.
    state = replies_for("250 Ok", "550 5.1.1 no", "550 5.1.1 no", "250 Ok", rcpts=("a@x", "b@x"))
    outcome = state.outcome(Sent.DATA)
    assert (outcome.status, outcome.code) == (Status.FAILED, 550)
    assert not state.wants_data


def test_every_recipient_refused_with_one_transient_is_deferred() -> None:
    state = replies_for("250 Ok", "550 5.1.1 no", "451 4.3.0 later", "554 no valid recipients",
                        rcpts=("a@x", "b@x"))  # fmt: skip
    outcome = state.outcome(Sent.DATA)
    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, 451, True)


def test_data_mode_goes_ahead_on_354_and_waits_for_the_end() -> None:
    state = replies_for("250 Ok", "250 Ok", "354 go ahead", chunking=False)
    assert state.go_ahead and state.wants_data and state.answered
    state.expect_end()
    assert not state.go_ahead and state.awaiting_final
    state.take(reply("250 queued"))
    assert state.outcome(Sent.DATA).status is Status.SENT


def test_data_refused_is_the_outcome_when_the_data_never_went() -> None:
    state = replies_for("250 Ok", "250 Ok", "452 4.3.1 too much mail", chunking=False)
    assert not state.go_ahead
    outcome = state.outcome(Sent.COMMANDS)
    assert (outcome.status, outcome.code) == (Status.DEFERRED, 452)


@pytest.mark.parametrize(
    ("final", "status", "transient"),
    [("554 5.7.1 spam", Status.FAILED, False), ("452 4.3.1 full", Status.DEFERRED, True)],
)
def test_a_refused_end_of_data_is_failed_or_deferred(
    final: str, status: Status, transient: bool
) -> None:
    outcome = replies_for("250 Ok", "250 Ok", final).outcome(Sent.DATA)
    assert (outcome.status, outcome.transient) == (status, transient)


def test_a_nonsense_reply_to_the_data_is_unknown_and_ends_the_session() -> None:
    state = replies_for("250 Ok", "250 Ok", "354 what")
    assert state.lost_track and state.closes_session
    outcome = state.outcome(Sent.DATA)
    assert outcome.status is Status.UNKNOWN and "unexpected reply" in outcome.reply


def test_a_nonsense_reply_to_a_command_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="MAIL"):
        replies_for("354 go ahead")
    with pytest.raises(ProtocolError, match="a reply nobody asked for"):
        replies_for("250 Ok", "250 Ok", "250 Ok", "250 one too many")


def test_rset_refused_defers_unless_the_message_went_through() -> None:
    refused = replies_for("500 no", "250 Ok", "250 Ok", "554 no", reset=True)
    assert refused.closes_session
    outcome = refused.outcome(Sent.DATA)
    assert (outcome.status, outcome.transient) == (Status.DEFERRED, True)
    assert outcome.reply == "RSET refused: no"
    went = replies_for("500 no", "250 Ok", "250 Ok", "250 queued", reset=True)
    assert went.outcome(Sent.DATA).status is Status.SENT


@pytest.mark.parametrize(
    "lines",
    [
        ("421 4.3.2 closing",),  # to RSET
        ("250 Ok", "421 4.3.2 closing"),  # to MAIL
        ("250 Ok", "250 Ok", "421 4.3.2 closing"),  # to RCPT
        ("250 Ok", "250 Ok", "250 Ok", "421 4.3.2 closing"),  # to BDAT
    ],
)
def test_421_anywhere_defers_with_it_and_closes_the_session(lines: tuple[str, ...]) -> None:
    state = replies_for(*lines, reset=True)
    assert state.said_421 and state.closes_session
    outcome = state.outcome(Sent.DATA, LOST)
    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, 421, True)


# --- TransactionReplies: no verdict came --------------------------------------------------------


def test_lost_after_the_data_went_is_unknown() -> None:
    outcome = replies_for("250 Ok", "250 Ok").outcome(Sent.DATA, LOST)
    assert (outcome.status, outcome.code, outcome.transient) == (Status.UNKNOWN, None, False)
    assert outcome.reply == f"{LOST_AFTER_DATA} (connection reset)"


def test_lost_before_the_data_went_is_deferred_and_tried() -> None:
    outcome = replies_for("250 Ok", chunking=False).outcome(Sent.COMMANDS, LOST)
    assert (outcome.status, outcome.transient) == (Status.DEFERRED, True)
    assert outcome.reply == f"{LOST_BEFORE_DATA}: connection reset"


def test_lost_before_any_byte_of_it_went_is_not_sent() -> None:
    outcome = replies_for().outcome(Sent.NOTHING, LOST)
    assert (outcome.status, outcome.code, outcome.reply) == (Status.DEFERRED, None, NOT_SENT)


def test_recipients_refused_before_the_loss_are_kept() -> None:
    state = replies_for("250 Ok", "550 5.1.1 no", rcpts=("a@x", "b@x"))
    outcome = state.outcome(Sent.DATA, LOST)
    assert outcome.status is Status.UNKNOWN
    assert [r.address for r in outcome.refused] == ["a@x"]


# --- the message in wire form -------------------------------------------------------------------


def test_bdat_payload_has_crlf_line_ends_and_no_dot_stuffing() -> None:
    assert crlf_lines(b"a\n.b\r\n..c\rd") == b"a\r\n.b\r\n..c\r\nd\r\n"
    assert dot_stuff(b"a\n.b") == b"a\r\n..b\r\n.\r\n"


def test_envelope_in_wire_form_follows_the_servers_extensions() -> None:
    message = make_message(rcpt_tos=("jörg@bücher.example", "b@example.org"))
    envelope = transaction(message, {"smtputf8", "size"})
    assert not isinstance(envelope, type(None))
    assert envelope.commands() == [  # type: ignore[union-attr]
        f"MAIL FROM:<news@example.com> SIZE={len(message.data)} SMTPUTF8",
        "RCPT TO:<jörg@bücher.example>",
        "RCPT TO:<b@example.org>",
    ]
    refused = transaction(message, {"size"})
    assert getattr(refused, "status", None) is Status.FAILED
