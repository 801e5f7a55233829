"""SmtpSession.send_batch pipelined (RFC 2920) with DATA or BDAT (RFC 3030), against real
aiosmtpd servers in each mode, faults injected on the server side.

Each test checks every message's outcome, and that the server took each Message-ID at most
once; ``before_data`` is checked against the client's own dialogue log: when it is called, no
byte of those messages' data has been queued yet, let alone written.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from servers import (
    AUTH_MECHANISMS,
    PASSWORD,
    USERNAME,
    Certificates,
    ClosingHandler,
    DeferringHandler,
    DroppingHandler,
    Mode,
    RecordingHandler,
    RefusingHandler,
    SmtpTestServer,
    StallingHandler,
    StartServer,
    make_message,
    make_smtp_config,
)

from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.smtp import LOST_AFTER_DATA, LOST_BEFORE_DATA, SmtpSession, dot_stuff
from batchmail.transport import NOT_SENT

PIPELINED: list[Mode] = ["pipelining", "chunking"]


class Recorder:
    """A debug log and a before_data that notes how much data had been queued by then."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.calls: list[tuple[list[int], int]] = []  # (rows, data lines logged before)

    def debug(self, line: str) -> None:
        self.lines.append(line)

    def before_data(self, going: Sequence[ComposedMessage]) -> None:
        data_so_far = sum(line.startswith("C: <data:") for line in self.lines)
        self.calls.append(([m.row_number for m in going], data_so_far))

    @property
    def rows(self) -> list[list[int]]:
        return [rows for rows, _ in self.calls]


def session_for(
    server: SmtpTestServer, recorder: Recorder, password: str | None = None, **overrides: object
) -> SmtpSession:
    session = SmtpSession(make_smtp_config(server, **overrides), password, debug=recorder.debug)
    session.connect()
    return session


def batch(count: int, **overrides: str) -> list[ComposedMessage]:
    """Messages 1..count to user<n>@example.org; ``overrides`` maps "<n>" to another address."""
    return [
        make_message(n, overrides.get(str(n), f"user{n}@example.org")) for n in range(1, count + 1)
    ]


def statuses(outcomes: list[Outcome]) -> list[Status]:
    return [outcome.status for outcome in outcomes]


def received_at_most_once(server: SmtpTestServer) -> collections.Counter[str | None]:
    counts = collections.Counter(server.message_ids())
    assert all(count == 1 for count in counts.values()), counts
    return counts


def row_ids(*rows: int) -> list[str]:
    return [f"<row-{n}@batchmail.test>" for n in rows]


# --- the happy path -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PIPELINED)
def test_a_window_goes_out_pipelined_and_every_message_arrives_once(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(mode=mode)
    recorder = Recorder()
    messages = batch(5)
    with session_for(server, recorder) as session:
        outcomes = session.send_batch(messages, recorder.before_data)
        again = session.send_batch(batch(7)[5:], recorder.before_data)

    assert statuses(outcomes + again) == [Status.SENT] * 7
    assert server.message_ids() == row_ids(1, 2, 3, 4, 5, 6, 7)
    assert [m.data for m in server.messages[:5]] == [m.data for m in messages]
    assert server.commands.count("EHLO") == 1
    assert server.commands.count("RSET") == 6  # before every transaction but the first
    client = [line for line in recorder.lines if line.startswith("C: ")]
    size = len(messages[0].data)
    if mode == "chunking":
        assert recorder.rows == [[1, 2, 3, 4, 5], [6, 7]]  # once per window
        assert f"C: BDAT {size} LAST" in client and "C: DATA" not in client
        # The whole window in one go: no reply is read before the last data is queued.
        first_reply = next(i for i, line in enumerate(recorder.lines) if line == "S: 250 OK")
        assert sum(line.startswith("C: <data:") for line in recorder.lines[:first_reply]) == 5
    else:
        assert recorder.rows == [[1], [2], [3], [4], [5], [6], [7]]  # once per message
        # The data goes with the next transaction's commands, before any reply to them.
        data_at = recorder.lines.index(f"C: <data: {len(dot_stuff(messages[0].data))} bytes>")
        assert recorder.lines[data_at + 1 : data_at + 5] == [
            "C: RSET",
            f"C: MAIL FROM:<news@example.com> SIZE={len(messages[1].data)}",
            "C: RCPT TO:<user2@example.org>",
            "C: DATA",
        ]
    assert all(data_before == sum(map(len, recorder.rows[:i])) for i, (_, data_before) in
               enumerate(recorder.calls))  # fmt: skip


def test_window_is_one_without_pipelining_and_the_measured_default_with_it(
    start_smtp_server: StartServer,
) -> None:
    # With BDAT a batch is WINDOWS_PER_BATCH windows, which slide through it.
    for mode, expected, per_window in (
        ("plain", 1, 1),
        ("pipelining", 256, 1),
        ("chunking", 64, 4),
    ):
        server = start_smtp_server(mode=mode)
        session = SmtpSession(make_smtp_config(server))
        assert session.window == 1  # not connected: nothing known yet
        with session:
            session.connect()
            assert session.window == expected * per_window
        with SmtpSession(make_smtp_config(server), window=5) as session:
            session.connect()
            assert session.window == (1 if mode == "plain" else 5 * per_window)


class SlowDataHandler(RecordingHandler):
    """Takes a little while over each message, as a real server does."""

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        await asyncio.sleep(0.01)
        return None


def test_the_bdat_window_slides_with_never_more_than_window_unanswered(
    start_smtp_server: StartServer,
) -> None:
    server = start_smtp_server(SlowDataHandler(), mode="chunking")
    recorder = Recorder()
    session = SmtpSession(make_smtp_config(server), None, window=4, debug=recorder.debug)
    session.connect()
    start = len(recorder.lines)
    assert session.window == 16
    outcomes = session.send_batch(batch(16), recorder.before_data)
    assert statuses(outcomes) == [Status.SENT] * 16
    assert server.message_ids() == row_ids(*range(1, 17))

    # Replies come strictly in command order: the n-th reply answers the n-th command. The
    # debug log has each command when it is queued (about to go out) and each reply when read.
    commands = replies = 0
    bdat_at: list[int] = []  # each BDAT's place among the commands
    unanswered: list[int] = []  # BDATs queued and not answered, each time one is queued
    for line in recorder.lines[start:]:
        if line.startswith("S: "):
            replies += line[6:7] != "-"  # a multiline reply counts once, at its last line
        elif line.startswith("C: ") and not line.startswith("C: <data"):
            if line.startswith("C: BDAT"):
                bdat_at.append(commands)
                unanswered.append(sum(at >= replies for at in bdat_at))
            commands += 1
    assert len(bdat_at) == 16
    assert max(unanswered) == 4  # the window is used ...
    assert unanswered[4:] == [4] * 12  # ... and refilled as each reply comes: it slides
    # Each message was announced to before_data (the journal's mark) before its data.
    assert recorder.rows == [[n] for n in range(1, 17)]
    assert [data_before for _, data_before in recorder.calls] == list(range(16))
    session.close()


def test_bdat_carries_the_data_as_is_and_data_dot_stuffed(start_smtp_server: StartServer) -> None:
    body = ".\n.hidden\n..two dots\nend\n.\n"
    for mode in PIPELINED:
        server = start_smtp_server(mode=mode)
        message = make_message(body=body)
        bare = replace(make_message(2), parts=(b"Subject: x\n\n.line\nlast\r\nbare cr\r",))
        with session_for(server, Recorder()) as session:
            outcomes = session.send_batch([message, bare], lambda going: None)
        assert statuses(outcomes) == [Status.SENT] * 2
        assert server.messages[0].data == message.data
        assert server.messages[1].data == b"Subject: x\r\n\r\n.line\r\nlast\r\nbare cr\r\n"


@pytest.mark.parametrize("mode", PIPELINED)
def test_non_ascii_in_a_window_sends_each_envelope_as_it_needs(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(mode=mode)
    messages = [
        make_message(1, rcpt_tos=("jörg@example.com",)),
        replace(make_message(2), parts=("Subject: café\r\n\r\nDéjà vu\r\n".encode(),)),
        make_message(3, rcpt_tos=("info@bücher.example",)),
    ]
    with session_for(server, Recorder()) as session:
        outcomes = session.send_batch(messages, lambda going: None)
    assert statuses(outcomes) == [Status.SENT] * 3
    first, second, third = server.messages
    assert first.rcpt_tos == ("jörg@example.com",) and "SMTPUTF8" in first.mail_options
    assert "BODY=8BITMIME" in second.mail_options and second.data == messages[1].data
    assert third.rcpt_tos == ("info@xn--bcher-kva.example",)


@pytest.mark.parametrize("mode", PIPELINED)
def test_a_message_this_server_cannot_carry_fails_alone_and_never_goes_out(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(mode=mode, smtputf8=False)
    recorder = Recorder()
    messages = batch(3)
    messages[1] = make_message(2, rcpt_tos=("jörg@example.com",))
    with session_for(server, recorder) as session:
        outcomes = session.send_batch(messages, recorder.before_data)
    assert statuses(outcomes) == [Status.SENT, Status.FAILED, Status.SENT]
    assert "needs SMTPUTF8" in outcomes[1].reply
    assert 2 not in sum(recorder.rows, [])
    assert server.message_ids() == row_ids(1, 3)


def test_big_messages_over_starttls_with_auth(
    smtp_server_starttls_requiring_auth: SmtpTestServer,
) -> None:
    # Megabytes in one window over TLS: the server answers while we still write.
    server = smtp_server_starttls_requiring_auth
    body = "line of text that goes on and on\n" * 12_000  # about 400 KB each
    messages = [make_message(n, body=body) for n in range(1, 11)]
    recorder = Recorder()
    with session_for(server, recorder, PASSWORD, username=USERNAME) as session:
        started = time.monotonic()
        outcomes = session.send_batch(messages, recorder.before_data)
    assert time.monotonic() - started < 20
    assert statuses(outcomes) == [Status.SENT] * 10
    assert all(m.tls for m in server.messages)
    assert [m.data for m in server.messages] == [m.data for m in messages]
    received_at_most_once(server)


@pytest.mark.parametrize("mode", PIPELINED)
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_messages_in_parts_go_out_byte_for_byte(
    start_smtp_server: StartServer, certificates: Certificates, mode: Mode, tls: bool
) -> None:
    # A megabyte every message holds by reference (as a shared attachment is) between parts
    # of their own: sent without being joined, over a socket that fills (so writes stop
    # part-way through a part), plain and TLS alike.
    shared = b"".join(b"%07d a line of the shared attachment\r\n" % n for n in range(25_000))
    messages = []
    for n in range(1, 9):
        base = make_message(n)
        if n % 3:
            parts = (base.data, shared, b"own\r\n")
            messages.append(replace(base, parts=parts, crlf_only=True, dot_lines=False))
        else:  # no CRLF at the end, and a dot to double: the transport must see to both
            parts = (base.data, shared, b"row %d's own line\r\n" % n, b".")
            messages.append(replace(base, parts=parts, crlf_only=False))
    if tls:
        server = start_smtp_server(
            security="starttls",
            certificates=certificates,
            auth_mechanisms=AUTH_MECHANISMS,
            mode=mode,
        )
        session = session_for(server, Recorder(), PASSWORD, username=USERNAME)
    else:
        server = start_smtp_server(mode=mode)
        session = session_for(server, Recorder())
    with session:
        outcomes = session.send_batch(messages, lambda going: None)
    assert statuses(outcomes) == [Status.SENT] * 8
    assert [m.tls for m in server.messages] == [tls] * 8
    expected = [m.data if m.crlf_only else m.data + b"\r\n" for m in messages]
    assert [m.data for m in server.messages] == expected
    received_at_most_once(server)


# --- refusals inside a window ---------------------------------------------------------------


class SenderRefusingHandler(RecordingHandler):
    """550 to MAIL from addresses containing "refuse"."""

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        return "550 5.7.1 sender refused" if "refuse" in address else None


class MarkedDataRejectingHandler(RecordingHandler):
    """554 at the end of data for messages to addresses containing "spam"."""

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        if any("spam" in address for address in envelope.rcpt_tos):
            return "554 5.7.1 rejected as spam"
        return None


@pytest.mark.parametrize("mode", PIPELINED)
def test_refusals_mid_window_affect_only_their_own_transaction(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(RefusingHandler(), mode=mode)
    recorder = Recorder()
    messages = batch(6, **{"2": "refuse-a@example.org", "5": "refuse-b@example.org"})
    messages[3] = make_message(4, rcpt_tos=("ok@example.org", "refuse-cc@example.org"))
    with session_for(server, recorder) as session:
        outcomes = session.send_batch(messages, recorder.before_data)
        assert session.connected
    assert statuses(outcomes) == [Status.SENT, Status.FAILED, Status.SENT, Status.SENT,
                                  Status.FAILED, Status.SENT]  # fmt: skip
    assert [(o.code, o.transient) for o in (outcomes[1], outcomes[4])] == [(550, False)] * 2
    assert outcomes[1].reply == "5.1.1 <refuse-a@example.org>: mailbox unavailable"
    assert [(r.address, r.code) for r in outcomes[3].refused] == [("refuse-cc@example.org", 550)]
    assert server.messages[2].rcpt_tos == ("ok@example.org",)
    assert server.message_ids() == row_ids(1, 3, 4, 6)
    if mode == "pipelining":  # DATA: no data for a transaction without recipients
        assert recorder.rows == [[1], [3], [4], [6]]


@pytest.mark.parametrize("mode", PIPELINED)
def test_sender_refused_and_data_rejected_mid_window(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    class Both(SenderRefusingHandler, MarkedDataRejectingHandler):
        pass

    server = start_smtp_server(Both(), mode=mode)
    messages = batch(4, **{"3": "spam@example.org"})
    messages[1] = make_message(2, mail_from="refuse@example.com")
    with session_for(server, Recorder()) as session:
        outcomes = session.send_batch(messages, lambda going: None)
        assert session.connected
    assert statuses(outcomes) == [Status.SENT, Status.FAILED, Status.FAILED, Status.SENT]
    assert (outcomes[1].code, outcomes[1].reply) == (550, "5.7.1 sender refused")
    assert (outcomes[2].code, outcomes[2].reply) == (554, "5.7.1 rejected as spam")
    assert server.message_ids() == row_ids(1, 4)


@pytest.mark.parametrize("mode", PIPELINED)
def test_451_mid_window_defers_only_that_message(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(DeferringHandler(), mode=mode)
    with session_for(server, Recorder()) as session:
        outcomes = session.send_batch(batch(3, **{"2": "defer@example.org"}), lambda going: None)
        assert session.connected
    assert statuses(outcomes) == [Status.SENT, Status.DEFERRED, Status.SENT]
    assert (outcomes[1].code, outcomes[1].transient) == (451, True)
    assert server.message_ids() == row_ids(1, 3)


@pytest.mark.parametrize("mode", PIPELINED)
def test_every_recipient_refused_is_failed_from_the_refusals_never_sent(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(RefusingHandler(), mode=mode)
    refused = make_message(1, rcpt_tos=("refuse1@example.org", "refuse2@example.org"))
    recorder = Recorder()
    with session_for(server, recorder) as session:
        outcomes = session.send_batch([refused, make_message(2)], recorder.before_data)
    assert (outcomes[0].status, outcomes[0].code) == (Status.FAILED, 550)
    assert [r.address for r in outcomes[0].refused] == [
        "refuse1@example.org",
        "refuse2@example.org",
    ]
    assert outcomes[1].status is Status.SENT
    assert server.message_ids() == row_ids(2)
    # What the server said to DATA/BDAT after refusing every RCPT: not believed either way.
    assert ("S: 554 5.5.1 Error: no valid recipients" if mode == "chunking" else
            "S: 503 Error: need RCPT command") in recorder.lines  # fmt: skip


def test_a_354_with_no_recipient_accepted_gets_an_empty_message(
    start_smtp_server: StartServer,
) -> None:
    class Careless(RefusingHandler):
        """Says 354 to DATA although it refused every RCPT (RFC 2920 3.1 warns of it)."""

        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            reply = await super().handle_RCPT(server, session, envelope, address, options)
            envelope.rcpt_tos.append(address)  # accepted after all, whatever it said
            return reply

    server = start_smtp_server(Careless(), mode="pipelining")
    recorder = Recorder()
    with session_for(server, recorder) as session:
        outcomes = session.send_batch(
            [make_message(1, "refuse@example.org"), make_message(2)], recorder.before_data
        )
    assert statuses(outcomes) == [Status.FAILED, Status.SENT]
    assert recorder.rows == [[2]]
    assert "C: ." in recorder.lines
    assert [m.data for m in server.messages] == [b"", make_message(2).data]  # the empty one


def test_each_verdict_is_handed_over_before_the_next_data_goes(
    start_smtp_server: StartServer,
) -> None:
    # The runner journals these with the next in-flight mark: a kill mid-window then leaves
    # only the message whose data is out unknown, not every message answered so far.
    server = start_smtp_server(RefusingHandler(), mode="pipelining")
    messages = batch(6, **{"2": "refuse-a@example.org", "5": "refuse-b@example.org"})
    answered: list[tuple[ComposedMessage, Outcome]] = []
    seen_at_data: list[tuple[int, list[int]]] = []

    def before_data(going: Sequence[ComposedMessage]) -> None:
        (message,) = going
        seen_at_data.append((message.row_number, [m.row_number for m, _ in answered]))

    with session_for(server, Recorder()) as session:
        outcomes = session.send_batch(
            messages, before_data, lambda message, outcome: answered.append((message, outcome))
        )
    assert seen_at_data == [(1, []), (3, [1, 2]), (4, [1, 2, 3]), (6, [1, 2, 3, 4, 5])]
    assert answered == list(zip(messages[:5], outcomes[:5], strict=True))
    assert statuses(outcomes) == [Status.SENT, Status.FAILED, Status.SENT, Status.SENT] + [
        Status.FAILED,
        Status.SENT,
    ]


# --- the connection lost inside a window --------------------------------------------------------


def test_drop_with_a_full_bdat_window_in_flight(start_smtp_server: StartServer) -> None:
    server = start_smtp_server(DroppingHandler(), mode="chunking")
    server.handler.drop_at = "end_of_data"  # type: ignore[attr-defined]
    server.handler.drop_after = 2  # type: ignore[attr-defined]
    recorder = Recorder()
    session = session_for(server, recorder)
    outcomes = session.send_batch(batch(6), recorder.before_data)

    assert statuses(outcomes) == [Status.SENT] * 2 + [Status.UNKNOWN] * 4
    assert all(o.reply.startswith(LOST_AFTER_DATA) and not o.transient for o in outcomes[2:])
    assert recorder.rows == [[1, 2, 3, 4, 5, 6]]
    assert not session.connected
    assert server.message_ids() == row_ids(1, 2)
    assert [m.message_id for m in server.handler.unacknowledged] == row_ids(3)


def test_after_a_bdat_window_is_lost_batches_shrink_then_grow_back(
    start_smtp_server: StartServer,
) -> None:
    server = start_smtp_server(DroppingHandler(), mode="chunking")
    server.handler.drop_at = "end_of_data"  # type: ignore[attr-defined]
    server.handler.drop_after = 2  # type: ignore[attr-defined]
    session = SmtpSession(make_smtp_config(server), None, window=32)
    session.connect()
    messages = [make_message(n, f"user{n}@example.org") for n in range(1, 500)]
    assert session.window == 32 * 4  # four windows to a batch
    first = session.send_batch(messages[:32], lambda going: None)
    assert statuses(first) == [Status.SENT] * 2 + [Status.UNKNOWN] * 30
    sizes = []
    sent = 32
    while sent < len(messages):
        if not session.connected:
            session.connect()
        size = session.window
        sizes.append(size)
        outcomes = session.send_batch(messages[sent : sent + size], lambda going: None)
        assert set(statuses(outcomes)) == {Status.SENT}
        sent += size
    # A quarter of the lost window, then doubling back (four windows to a batch).
    assert sizes[:4] == [8 * 4, 16 * 4, 32 * 4, 32 * 4]
    received_at_most_once(server)
    session.close()


def test_drop_at_mail_mid_bdat_window_leaves_every_later_message_unknown(
    start_smtp_server: StartServer,
) -> None:
    # The data of the later transactions was written before the server went: it may have it.
    server = start_smtp_server(DroppingHandler(), mode="chunking")
    server.handler.drop_after = 3  # type: ignore[attr-defined]
    session = session_for(server, Recorder())
    outcomes = session.send_batch(batch(5), lambda going: None)
    assert statuses(outcomes) == [Status.SENT] * 3 + [Status.UNKNOWN] * 2
    assert not session.connected
    received_at_most_once(server)
    assert server.message_ids() == row_ids(1, 2, 3)


@pytest.mark.parametrize("drop_at", ["end_of_data", "mail", "rcpt"])
def test_drop_mid_data_window(start_smtp_server: StartServer, drop_at: str) -> None:
    server = start_smtp_server(DroppingHandler(), mode="pipelining")
    server.handler.drop_at = drop_at  # type: ignore[attr-defined]
    server.handler.drop_after = 2  # type: ignore[attr-defined]
    recorder = Recorder()
    session = session_for(server, recorder)
    outcomes = session.send_batch(batch(5), recorder.before_data)

    assert statuses(outcomes[:2]) == [Status.SENT] * 2
    if drop_at == "end_of_data":
        # 3's data went out (it may have arrived), and 4's commands with it, not its data.
        assert outcomes[2].status is Status.UNKNOWN
        assert outcomes[2].reply.startswith(LOST_AFTER_DATA)
        tried, untried = outcomes[3:4], outcomes[4:]
        assert recorder.rows == [[1], [2], [3]]
    else:
        tried, untried = outcomes[2:3], outcomes[3:]
        assert recorder.rows == [[1], [2]]
    assert [(o.status, o.transient) for o in tried] == [(Status.DEFERRED, True)]
    assert tried[0].reply.startswith(LOST_BEFORE_DATA)
    # Nothing of the rest went out: the runner may retry them without counting an attempt.
    assert [(o.status, o.code, o.reply) for o in untried] == [
        (Status.DEFERRED, None, NOT_SENT)
    ] * len(untried)
    assert not session.connected
    assert server.message_ids() == row_ids(1, 2)


@pytest.mark.parametrize("mode", PIPELINED)
def test_421_mid_window_then_the_rest_on_a_new_connection(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(ClosingHandler(), mode=mode)
    server.handler.close_after = 2  # type: ignore[attr-defined]
    session = session_for(server, Recorder())
    messages = batch(5)
    outcomes = session.send_batch(messages, lambda going: None)

    assert statuses(outcomes[:3]) == [Status.SENT, Status.SENT, Status.DEFERRED]
    assert (outcomes[2].code, outcomes[2].transient) == (421, True)
    assert outcomes[2].session_closed  # the session's verdict, not the message's
    if mode == "chunking":  # their data went out before the 421 came back: it may be there
        assert statuses(outcomes[3:]) == [Status.UNKNOWN] * 2
    else:  # nothing of them went out
        assert [(o.status, o.reply) for o in outcomes[3:]] == [(Status.DEFERRED, NOT_SENT)] * 2
    assert not session.connected
    session.connect()
    rest = session.send_batch(messages[2:4], lambda going: None)
    session.close()
    assert statuses(rest) == [Status.SENT] * 2
    assert server.message_ids() == row_ids(1, 2, 3, 4)


@pytest.mark.parametrize("mode", PIPELINED)
def test_no_verdict_within_data_timeout_is_unknown(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(StallingHandler(), mode=mode)
    # A minute for each command: only data_timeout can end the wait within half of it.
    session = session_for(server, Recorder(), timeout=60, data_timeout=0.5)
    started = time.monotonic()
    outcomes = session.send_batch(batch(3), lambda going: None)

    assert time.monotonic() - started < 30  # data_timeout, not timeout (60 s)
    first = outcomes[0]
    assert (first.status, first.code) == (Status.UNKNOWN, None)
    assert first.reply == f"{LOST_AFTER_DATA} (no reply within 0.5s)"
    later = Status.UNKNOWN if mode == "chunking" else Status.DEFERRED  # their data went or not
    assert statuses(outcomes[1:]) == [later] * 2
    assert not session.connected
    assert server.messages == []


def test_no_reply_to_mail_within_timeout_is_deferred(start_smtp_server: StartServer) -> None:
    class SilentAtMail(RecordingHandler):
        async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
            await asyncio.get_running_loop().create_future()  # never
            return None

    server = start_smtp_server(SilentAtMail(), mode="pipelining")
    session = session_for(server, Recorder(), timeout=0.5, data_timeout=120)
    started = time.monotonic()
    outcomes = session.send_batch(batch(2), lambda going: None)
    assert time.monotonic() - started < 60  # timeout, not data_timeout (120 s)
    assert outcomes[0].reply == f"{LOST_BEFORE_DATA}: no reply within 0.5s"
    assert statuses(outcomes) == [Status.DEFERRED] * 2


@pytest.mark.parametrize("mode", PIPELINED)
def test_before_data_failing_drops_the_connection_and_nothing_arrives(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    server = start_smtp_server(mode=mode)
    session = session_for(server, Recorder())

    def journal_full(going: Sequence[ComposedMessage]) -> None:
        raise OSError("journal full")

    with pytest.raises(OSError, match="journal full"):
        session.send_batch(batch(3), journal_full)
    assert not session.connected
    time.sleep(0.1)
    assert server.messages == []


@pytest.mark.parametrize("mode", PIPELINED)
def test_a_reply_that_makes_no_sense_ends_the_session(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    class Confused(RecordingHandler):
        async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
            return "354 go ahead" if "confused" in address else None

    server = start_smtp_server(Confused(), mode=mode)
    session = session_for(server, Recorder())
    outcomes = session.send_batch(batch(3, **{"2": "confused@example.org"}), lambda going: None)
    assert outcomes[0].status is Status.SENT
    lost = Status.UNKNOWN if mode == "chunking" else Status.DEFERRED  # its data went, or not
    assert outcomes[1].status is lost
    assert "out of step: the server answered RCPT with 354 go ahead" in outcomes[1].reply
    assert statuses(outcomes[2:]) == [lost]
    assert not session.connected
    # With BDAT, message 3 went out whole before the confusion came back: the server may
    # have taken it before we hung up, or not. Unknown, rightly.
    possible = [row_ids(1), row_ids(1, 3)] if mode == "chunking" else [row_ids(1)]
    assert server.message_ids() in possible


def test_an_extra_reply_at_the_end_ends_the_session(start_smtp_server: StartServer) -> None:
    class Chatty(RecordingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.last_reply_sent = threading.Event()  # the reply too many is on its way

        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            reply = await super().handle_RCPT(server, session, envelope, address, options)
            return f"{reply}\r\n250 and one more" if "chatty" in address else reply

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            if any("chatty" in address for address in envelope.rcpt_tos):
                # Runs once this reply is written: aiosmtpd pushes it before it yields.
                server.loop.call_soon(self.last_reply_sent.set)
            return await super().handle_DATA(server, session, envelope)

    handler = Chatty()
    server = start_smtp_server(handler, mode="chunking")
    session = session_for(server, Recorder())
    recorder = Recorder()
    messages = batch(4, **{"2": "chatty@example.org"})
    outcomes = session.send_batch(messages[:2], recorder.before_data)
    assert statuses(outcomes) == [Status.SENT] * 2  # message 2's verdict is still to come
    assert handler.last_reply_sent.wait(60)
    later = session.send_batch(messages[2:], recorder.before_data)
    # The reply too many is seen at once (when it comes with the last expected one) or before
    # anything of the next window is sent: either way nothing more goes out on this session.
    assert statuses(later) == [Status.DEFERRED] * 2
    assert later[0].reply in (
        NOT_SENT,
        f"{LOST_BEFORE_DATA}: the server sent b'250 2.0.0 OK queued\\r\\n' unasked",
    )
    assert later[1].reply == NOT_SENT
    assert recorder.rows == [[1, 2]]
    assert not session.connected
    assert server.message_ids() == row_ids(1, 2)


def test_a_421_while_idle_is_seen_before_the_next_window_goes_out(
    start_smtp_server: StartServer,
) -> None:
    class IdleTimeout(RecordingHandler):
        """Says 421 and closes 0.1 s after each message, as a server tired of waiting."""

        def __init__(self) -> None:
            super().__init__()
            self.gave_up = threading.Event()

        async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
            asyncio.ensure_future(self._give_up(server))
            return None

        async def _give_up(self, server: SMTP) -> None:
            await asyncio.sleep(0.1)
            await server.push("421 4.4.2 idle too long")
            assert server.transport is not None
            server.transport.close()
            self.gave_up.set()

    handler = IdleTimeout()
    server = start_smtp_server(handler, mode="chunking")
    recorder = Recorder()
    session = session_for(server, recorder)
    messages = batch(3)
    assert statuses(session.send_batch(messages[:1], recorder.before_data)) == [Status.SENT]
    assert handler.gave_up.wait(60)
    later = session.send_batch(messages[1:], recorder.before_data)

    # Not a byte of the window went out; the first message counts it as a try all the same
    # (so that a server doing this every time cannot keep the runner busy for ever).
    assert [(o.status, o.code, o.reply) for o in later] == [
        (Status.DEFERRED, None, f"{LOST_BEFORE_DATA}: the server sent "
                                "b'421 4.4.2 idle too long\\r\\n' unasked"),
        (Status.DEFERRED, None, NOT_SENT),
    ]  # fmt: skip
    assert recorder.rows == [[1]]
    assert server.commands.count("MAIL") == 1
    assert not session.connected


def test_a_421_and_close_while_a_big_window_is_still_being_written(
    start_smtp_server: StartServer,
) -> None:
    # The server gives up with unread data in its socket: the kernel resets the connection,
    # our next write fails, and the replies that came before must still be read.
    server = start_smtp_server(ClosingHandler(), mode="chunking")
    server.handler.close_after = 2  # type: ignore[attr-defined]
    body = "a longer line of text for a bigger message\n" * 40_000  # about 1.7 MB each
    messages = [make_message(n, body=body) for n in range(1, 9)]
    session = session_for(server, Recorder())
    outcomes = session.send_batch(messages, lambda going: None)

    assert statuses(outcomes[:2]) == [Status.SENT] * 2
    assert (outcomes[2].status, outcomes[2].code) == (Status.DEFERRED, 421)
    for outcome in outcomes[3:]:  # unknown when its data had gone out whole, else not sent
        assert outcome.status is Status.UNKNOWN or (
            outcome.status is Status.DEFERRED
            and outcome.reply.startswith(LOST_BEFORE_DATA)  # NOT_SENT reads the same
        ), outcome
    assert not session.connected
    assert server.message_ids() == row_ids(1, 2)


@pytest.mark.parametrize("mode", PIPELINED)
def test_a_server_that_says_421_and_goes_on_is_believed_for_what_it_answers(
    start_smtp_server: StartServer, mode: Mode
) -> None:
    # It answers 421 to message 3's MAIL, then takes messages 4 and 5, pipelined behind it,
    # before it closes: they must never be reported as not sent (the runner would send them
    # again), and what it answered for them is what happened.
    class Lingering(ClosingHandler):
        close_after = 2
        linger = True

        async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
            if self.faults:
                return None  # one 421, then business as usual until the close
            return await super().on_mail(server, session, address)

    server = start_smtp_server(Lingering(), mode=mode)
    session = session_for(server, Recorder())
    outcomes = session.send_batch(batch(5), lambda going: None)

    assert statuses(outcomes[:3]) == [Status.SENT, Status.SENT, Status.DEFERRED]
    assert outcomes[2].code == 421
    taken = set(server.message_ids())
    for message, outcome in zip(batch(5)[3:], outcomes[3:], strict=True):
        if message.message_id in taken:
            assert outcome.status in (Status.SENT, Status.UNKNOWN), outcome
        else:
            assert outcome.status in (Status.DEFERRED, Status.UNKNOWN), outcome
    if mode == "chunking":
        assert statuses(outcomes[3:]) == [Status.SENT] * 2  # it answered them before closing
    assert not session.connected
    received_at_most_once(server)


# --- the debug log ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_debug_log_shows_the_dialogue_but_never_the_password(
    start_smtp_server: StartServer, mechanism: str
) -> None:
    server = start_smtp_server(auth_mechanisms=(mechanism,))
    recorder = Recorder()
    config = make_smtp_config(server, username=USERNAME, insecure_auth=True)
    with SmtpSession(config, PASSWORD, debug=recorder.debug) as session:
        session.connect()
        session.send_batch(batch(1), lambda going: None)

    log = "\n".join(recorder.lines)
    assert PASSWORD not in log and "czNjcmV0LXB3" not in log  # nor its base64
    assert USERNAME not in log.replace("alice@", "")
    assert recorder.lines[0].startswith("S: 220 ")
    assert f"C: AUTH {mechanism} ***" in recorder.lines  # the initial response hidden
    if mechanism == "LOGIN":
        assert recorder.lines.count("S: 334 ***") == 1 and "C: ***" in recorder.lines
    assert "S: 235 2.7.0 Authentication successful" in recorder.lines
    size = len(batch(1)[0].data)
    assert f"C: MAIL FROM:<news@example.com> SIZE={size}" in recorder.lines
    assert f"C: <data: {size} bytes>" in recorder.lines
    assert "Hello." not in log  # message data never
    assert recorder.lines[-2:] == ["C: quit", "S: 221 Bye"]


def test_a_server_echoing_the_password_does_not_get_it_into_the_debug_log(
    start_smtp_server: StartServer,
) -> None:
    class Echoing(RecordingHandler):
        async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
            return f"250 welcome back, your password is {PASSWORD}"

    server = start_smtp_server(Echoing(), auth_mechanisms=("PLAIN",))
    recorder = Recorder()
    config = make_smtp_config(server, username=USERNAME, insecure_auth=True)
    with SmtpSession(config, PASSWORD, debug=recorder.debug) as session:
        session.connect()
        session.send_batch(batch(1), lambda going: None)
    assert "S: 250 welcome back, your password is ***" in recorder.lines
    assert PASSWORD not in "\n".join(recorder.lines)
