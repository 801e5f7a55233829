"""SmtpSession against real aiosmtpd servers with faults injected on the server side."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult
from hypothesis import given
from hypothesis import strategies as st
from servers import (
    PASSWORD,
    USERNAME,
    Certificates,
    DeferringHandler,
    RecordingHandler,
    SmtpTestServer,
    StartServer,
    make_message,
    make_smtp_config,
)

from batchmail.errors import RunAborted
from batchmail.outcomes import ComposedMessage, RecipientRefusal, Status
from batchmail.smtp import (
    LOST_AFTER_DATA,
    LOST_BEFORE_DATA,
    ServerUnreachable,
    SmtpSession,
    dot_stuff,
)
from batchmail.smtp_envelope import crlf_lines, dot_stuffed, payload
from batchmail.wire import has_dot_lines


class BeforeData:
    """Stands in for the runner's journal call; counts when it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def connected(
    server: SmtpTestServer, password: str | None = None, **overrides: object
) -> SmtpSession:
    session = SmtpSession(make_smtp_config(server, **overrides), password)
    session.connect()
    return session


@pytest.fixture
def session(smtp_server: SmtpTestServer) -> Iterator[SmtpSession]:
    with connected(smtp_server) as session:
        yield session


# --- sending ----------------------------------------------------------------------------------


def test_sends_several_messages_on_one_connection_with_rset_between(
    smtp_server: SmtpTestServer,
) -> None:
    messages = [make_message(n, f"user{n}@example.com") for n in (1, 2, 3)]
    before_data = BeforeData()
    with connected(smtp_server) as session:
        outcomes = [session.send(message, before_data) for message in messages]

    assert [o.status for o in outcomes] == [Status.SENT] * 3
    assert [o.code for o in outcomes] == [250] * 3
    assert before_data.calls == 3
    assert [m.data for m in smtp_server.messages] == [m.data for m in messages]
    assert smtp_server.message_ids() == [m.message_id for m in messages]
    assert smtp_server.commands.count("EHLO") == 1  # one connection
    assert smtp_server.commands.count("RSET") == 2  # between transactions, not before the first
    assert smtp_server.commands[-1] == "QUIT"


def test_every_envelope_recipient_gets_a_rcpt(smtp_server: SmtpTestServer) -> None:
    message = make_message(rcpt_tos=("to@example.com", "cc@example.com", "bcc@example.com"))
    with connected(smtp_server) as session:
        outcome = session.send(message, BeforeData())

    assert outcome.status is Status.SENT
    assert smtp_server.messages[0].rcpt_tos == message.envelope.rcpt_tos
    assert smtp_server.messages[0].mail_from == "news@example.com"


def test_lines_starting_with_a_dot_arrive_unchanged(
    session: SmtpSession, smtp_server: SmtpTestServer
) -> None:
    message = make_message(body=".\n.hidden\n..two dots\nend\n.\n")
    assert session.send(message, BeforeData()).status is Status.SENT
    assert smtp_server.messages[0].data == message.data


def test_bare_line_feeds_go_out_as_crlf(session: SmtpSession, smtp_server: SmtpTestServer) -> None:
    message = replace(make_message(), parts=(b"Subject: x\n\n.line\nlast\r\nbare cr\r",))
    assert session.send(message, BeforeData()).status is Status.SENT
    assert smtp_server.messages[0].data == b"Subject: x\r\n\r\n.line\r\nlast\r\nbare cr\r\n"


def test_size_is_declared_when_the_server_offers_it(
    session: SmtpSession, smtp_server: SmtpTestServer
) -> None:
    message = make_message()
    session.send(message, BeforeData())
    assert smtp_server.messages[0].mail_options == (f"SIZE={len(message.data)}",)


def test_eight_bit_data_is_declared_8bitmime(
    session: SmtpSession, smtp_server: SmtpTestServer
) -> None:
    message = replace(make_message(), parts=("Subject: café\r\n\r\nDéjà vu\r\n".encode(),))
    assert session.send(message, BeforeData()).status is Status.SENT
    assert "BODY=8BITMIME" in smtp_server.messages[0].mail_options
    assert smtp_server.messages[0].data == message.data


def test_send_before_connect_is_a_programming_error(smtp_server: SmtpTestServer) -> None:
    with pytest.raises(RuntimeError, match="connect"):
        SmtpSession(make_smtp_config(smtp_server)).send(make_message(), BeforeData())


def test_before_data_failing_drops_the_transaction(
    session: SmtpSession, smtp_server: SmtpTestServer
) -> None:
    def journal_full() -> None:
        raise OSError("journal full")

    with pytest.raises(OSError, match="journal full"):
        session.send(make_message(), journal_full)
    assert not session.connected
    time.sleep(0.1)
    assert smtp_server.messages == []


def test_close_is_idempotent_and_quiet_when_the_server_is_gone(smtp_server: SmtpTestServer) -> None:
    session = connected(smtp_server)
    smtp_server.stop()
    session.close()
    session.close()
    assert not session.connected


def test_connect_again_replaces_the_connection(smtp_server: SmtpTestServer) -> None:
    with connected(smtp_server) as session:
        session.connect()
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert smtp_server.commands.count("EHLO") == 2
    assert smtp_server.commands.count("QUIT") == 2


def test_falls_back_to_helo_when_ehlo_is_refused(smtp_server_helo_only: SmtpTestServer) -> None:
    with connected(smtp_server_helo_only) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert smtp_server_helo_only.commands[:2] == ["EHLO", "HELO"]


# --- international addresses ------------------------------------------------------------------


def test_non_ascii_local_part_fails_without_smtputf8(start_smtp_server: StartServer) -> None:
    server = start_smtp_server(smtputf8=False)
    with connected(server) as session:
        outcome = session.send(make_message(rcpt_tos=("jörg@example.com",)), BeforeData())
        assert session.send(make_message(2), BeforeData()).status is Status.SENT

    assert outcome.status is Status.FAILED
    assert (
        outcome.reply
        == "recipient jörg@example.com needs SMTPUTF8, which the server does not offer"
    )
    assert not outcome.transient
    assert server.commands.count("MAIL") == 1  # only for the second message


def test_non_ascii_local_part_is_sent_with_smtputf8(start_smtp_server: StartServer) -> None:
    server = start_smtp_server(smtputf8=True)
    with connected(server) as session:
        outcome = session.send(make_message(rcpt_tos=("jörg@example.com",)), BeforeData())

    assert outcome.status is Status.SENT
    assert server.messages[0].rcpt_tos == ("jörg@example.com",)
    assert "SMTPUTF8" in server.messages[0].mail_options


def test_non_ascii_domain_is_sent_as_idna(start_smtp_server: StartServer) -> None:
    server = start_smtp_server(smtputf8=False)
    with connected(server) as session:
        outcome = session.send(make_message(rcpt_tos=("info@bücher.example",)), BeforeData())

    assert outcome.status is Status.SENT
    assert server.messages[0].rcpt_tos == ("info@xn--bcher-kva.example",)


def test_a_domain_that_is_not_valid_idna_fails_the_message(session: SmtpSession) -> None:
    outcome = session.send(make_message(rcpt_tos=("info@bücher..example",)), BeforeData())
    assert outcome.status is Status.FAILED
    assert outcome.reply.startswith("recipient info@bücher..example: the domain is not valid IDNA")
    assert session.connected


def test_control_characters_in_an_address_fail_the_message(session: SmtpSession) -> None:
    outcome = session.send(
        make_message(rcpt_tos=("a@example.com\r\nRCPT TO:<x@evil>",)), BeforeData()
    )
    assert outcome.status is Status.FAILED
    assert "control characters" in outcome.reply
    assert session.connected


# --- TLS --------------------------------------------------------------------------------------


def test_starttls_with_the_trusted_ca(smtp_server_starttls: SmtpTestServer) -> None:
    with connected(smtp_server_starttls) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert smtp_server_starttls.messages[0].tls
    assert smtp_server_starttls.commands.count("EHLO") == 2  # again after STARTTLS


def test_starttls_honours_ssl_cert_file(
    smtp_server_starttls: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_server_starttls.ca_file))
    with connected(smtp_server_starttls, ca_file=None) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT


def test_starttls_with_an_untrusted_certificate_aborts(
    smtp_server_starttls: SmtpTestServer,
) -> None:
    session = SmtpSession(make_smtp_config(smtp_server_starttls, ca_file=None))
    with pytest.raises(RunAborted, match="certificate") as caught:
        session.connect()
    assert f"127.0.0.1:{smtp_server_starttls.port}" in str(caught.value)
    assert not isinstance(caught.value, ServerUnreachable)  # retrying will not help
    assert not session.connected
    assert "MAIL" not in smtp_server_starttls.commands


def test_a_certificate_for_another_host_is_refused(
    start_smtp_server: StartServer, tmp_path: Path
) -> None:
    certificates = Certificates.create(tmp_path, identities=("mail.example.com",))
    server = start_smtp_server(security="starttls", certificates=certificates)
    with pytest.raises(RunAborted, match="certificate is for mail.example.com, not for 127.0.0.1"):
        SmtpSession(make_smtp_config(server)).connect()
    assert "MAIL" not in server.commands


def test_starttls_not_offered_aborts_before_any_credentials(
    smtp_server_without_starttls: SmtpTestServer,
) -> None:
    server = smtp_server_without_starttls
    session = SmtpSession(make_smtp_config(server, username=USERNAME), PASSWORD)
    with pytest.raises(RunAborted) as caught:
        session.connect()
    assert str(caught.value) == (
        f"127.0.0.1:{server.port} does not offer STARTTLS; refusing to continue without TLS"
    )
    assert server.commands == ["EHLO"]


def test_implicit_tls(smtp_server_tls: SmtpTestServer) -> None:
    with connected(smtp_server_tls) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert smtp_server_tls.messages[0].tls


def test_implicit_tls_against_a_plain_server_aborts(smtp_server: SmtpTestServer) -> None:
    with pytest.raises(RunAborted, match="TLS handshake failed.*smtp.security"):
        SmtpSession(make_smtp_config(smtp_server, security="tls")).connect()


def test_missing_ca_file_aborts(smtp_server_starttls: SmtpTestServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(RunAborted, match="smtp.ca_file .*nope.pem"):
        SmtpSession(make_smtp_config(smtp_server_starttls, ca_file=missing)).connect()


# --- AUTH -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_each_mechanism(start_smtp_server: StartServer, mechanism: str) -> None:
    server = start_smtp_server(auth_mechanisms=(mechanism,))
    with connected(server, PASSWORD, username=USERNAME, insecure_auth=True) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert ("AUTH", mechanism) in server.handler.command_args


def test_auth_after_starttls(smtp_server_starttls_requiring_auth: SmtpTestServer) -> None:
    server = smtp_server_starttls_requiring_auth
    with connected(server, PASSWORD, username=USERNAME) as session:
        assert session.send(make_message(), BeforeData()).status is Status.SENT
    assert server.messages[0].tls
    assert server.commands.index("AUTH") > server.commands.index("EHLO")


def test_wrong_password_aborts_without_showing_it(
    smtp_server_requiring_auth: SmtpTestServer,
) -> None:
    server = smtp_server_requiring_auth
    session = SmtpSession(
        make_smtp_config(server, username=USERNAME, insecure_auth=True), "wrong-pw-123"
    )
    with pytest.raises(RunAborted) as caught:
        session.connect()
    message = str(caught.value)
    assert message.startswith(f"authentication refused by 127.0.0.1:{server.port}: 535")
    assert "wrong-pw-123" not in message
    assert not isinstance(caught.value, ServerUnreachable)
    assert not session.connected


def test_a_server_echoing_the_password_does_not_get_it_into_the_error(
    start_smtp_server: StartServer,
) -> None:
    class Echoing(RecordingHandler):
        def authenticate(self, server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
            password = data.password.decode()
            return AuthResult(success=False, handled=False, message=f"535 bad password {password}")

    server = start_smtp_server(Echoing(), auth_mechanisms=("PLAIN",))
    session = SmtpSession(
        make_smtp_config(server, username=USERNAME, insecure_auth=True), "hunter2-secret"
    )
    with pytest.raises(RunAborted) as caught:
        session.connect()
    assert "535 bad password ***" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)


def test_no_password_over_plaintext_without_insecure_auth(
    smtp_server_requiring_auth: SmtpTestServer,
) -> None:
    session = SmtpSession(make_smtp_config(smtp_server_requiring_auth, username=USERNAME), PASSWORD)
    with pytest.raises(RunAborted, match="unencrypted"):
        session.connect()
    assert smtp_server_requiring_auth.commands == []  # refused before connecting


def test_username_on_a_server_without_auth_aborts(smtp_server: SmtpTestServer) -> None:
    session = SmtpSession(
        make_smtp_config(smtp_server, username=USERNAME, insecure_auth=True), PASSWORD
    )
    with pytest.raises(RunAborted, match="does not offer AUTH"):
        session.connect()


def test_username_without_password_aborts(smtp_server_requiring_auth: SmtpTestServer) -> None:
    session = SmtpSession(
        make_smtp_config(smtp_server_requiring_auth, username=USERNAME, insecure_auth=True)
    )
    with pytest.raises(RunAborted, match="no password"):
        session.connect()


def test_mail_refused_without_auth_fails_the_message(
    smtp_server_requiring_auth: SmtpTestServer,
) -> None:
    with connected(smtp_server_requiring_auth) as session:
        outcome = session.send(make_message(), BeforeData())
    assert (outcome.status, outcome.code, outcome.transient) == (Status.FAILED, 530, False)


# --- refusals ---------------------------------------------------------------------------------


def test_some_recipients_refused_is_sent_with_the_refusals(
    smtp_server_refusing: SmtpTestServer,
) -> None:
    message = make_message(rcpt_tos=("ok@example.com", "refuse-me@example.com"))
    with connected(smtp_server_refusing) as session:
        outcome = session.send(message, BeforeData())

    assert outcome.status is Status.SENT
    assert outcome.refused == (
        RecipientRefusal(
            "refuse-me@example.com", 550, "5.1.1 <refuse-me@example.com>: mailbox unavailable"
        ),
    )
    assert smtp_server_refusing.messages[0].rcpt_tos == ("ok@example.com",)


def test_every_recipient_refused_fails_and_the_session_goes_on(
    smtp_server_refusing: SmtpTestServer,
) -> None:
    before_data = BeforeData()
    refused = make_message(rcpt_tos=("refuse1@example.com", "refuse2@example.com"))
    with connected(smtp_server_refusing) as session:
        outcome = session.send(refused, before_data)
        after = session.send(make_message(2), before_data)

    assert (outcome.status, outcome.code, outcome.transient) == (Status.FAILED, 550, False)
    assert [r.address for r in outcome.refused] == ["refuse1@example.com", "refuse2@example.com"]
    assert before_data.calls == 1  # only for the second message
    assert after.status is Status.SENT
    assert smtp_server_refusing.commands.count("DATA") == 1
    assert "RSET" in smtp_server_refusing.commands


@pytest.mark.parametrize(
    ("reply", "status", "transient"),
    [
        ("554 5.7.1 Message rejected as spam", Status.FAILED, False),
        ("452 4.3.1 Insufficient system storage", Status.DEFERRED, True),
    ],
)
def test_message_refused_after_its_data(
    smtp_server_rejecting_data: SmtpTestServer, reply: str, status: Status, transient: bool
) -> None:
    smtp_server_rejecting_data.handler.reply = reply  # type: ignore[attr-defined]
    before_data = BeforeData()
    with connected(smtp_server_rejecting_data) as session:
        outcome = session.send(make_message(), before_data)
        assert session.connected
    assert (outcome.status, outcome.code, outcome.transient) == (status, int(reply[:3]), transient)
    assert outcome.reply == reply[4:]
    assert before_data.calls == 1


def test_451_is_deferred_and_transient(smtp_server_deferring: SmtpTestServer) -> None:
    with connected(smtp_server_deferring) as session:
        outcome = session.send(make_message(rcpt_tos=("defer@example.com",)), BeforeData())
        assert session.connected
    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, 451, True)


def test_deferred_recipient_accepted_on_retry(smtp_server_deferring: SmtpTestServer) -> None:
    smtp_server_deferring.handler.defer_times = 1  # type: ignore[attr-defined]
    message = make_message(rcpt_tos=("defer@example.com",))
    with connected(smtp_server_deferring) as session:
        first = session.send(message, BeforeData())
        second = session.send(message, BeforeData())
    assert (first.status, second.status) == (Status.DEFERRED, Status.SENT)
    assert smtp_server_deferring.handler.faults == 1


def test_all_refused_with_one_transient_is_deferred(start_smtp_server: StartServer) -> None:
    class RefusingAndDeferring(DeferringHandler):
        async def on_rcpt(self, server, session, address):  # type: ignore[no-untyped-def]
            if "refuse" in address:
                return "550 5.1.1 no such user"
            return await super().on_rcpt(server, session, address)

    server = start_smtp_server(RefusingAndDeferring())
    message = make_message(rcpt_tos=("refuse@example.com", "defer@example.com"))
    with connected(server) as session:
        outcome = session.send(message, BeforeData())
    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, 451, True)
    assert [r.code for r in outcome.refused] == [550, 451]


# --- dropped connections, 421, timeouts ----------------------------------------------------------


@pytest.mark.parametrize("drop_at", ["mail", "rcpt"])
def test_drop_before_data_is_deferred_and_disconnects(
    smtp_server_dropping: SmtpTestServer, drop_at: str
) -> None:
    smtp_server_dropping.handler.drop_at = drop_at  # type: ignore[attr-defined]
    before_data = BeforeData()
    session = connected(smtp_server_dropping)
    outcome = session.send(make_message(), before_data)

    assert (outcome.status, outcome.code, outcome.transient) == (Status.DEFERRED, None, True)
    assert outcome.reply.startswith(LOST_BEFORE_DATA)
    assert before_data.calls == 0
    assert not session.connected
    session.connect()  # the runner reconnects
    assert session.send(make_message(), before_data).status is Status.SENT
    session.close()


def test_drop_after_data_is_unknown(smtp_server_dropping: SmtpTestServer) -> None:
    smtp_server_dropping.handler.drop_at = "end_of_data"  # type: ignore[attr-defined]
    before_data = BeforeData()
    message = make_message()
    session = connected(smtp_server_dropping)
    outcome = session.send(message, before_data)

    assert (outcome.status, outcome.code, outcome.transient) == (Status.UNKNOWN, None, False)
    assert outcome.reply.startswith(LOST_AFTER_DATA)
    assert before_data.calls == 1
    assert not session.connected
    assert smtp_server_dropping.handler.unacknowledged[0].data == message.data
    assert smtp_server_dropping.messages == []


def test_drop_after_some_messages(smtp_server_dropping: SmtpTestServer) -> None:
    smtp_server_dropping.handler.drop_after = 2  # type: ignore[attr-defined]
    with connected(smtp_server_dropping) as session:
        outcomes = [session.send(make_message(n), BeforeData()) for n in (1, 2, 3)]
    assert [o.status for o in outcomes] == [Status.SENT, Status.SENT, Status.DEFERRED]


def test_421_defers_and_disconnects_then_a_reconnect_works(smtp_server_421: SmtpTestServer) -> None:
    session = connected(smtp_server_421)
    first = session.send(make_message(1), BeforeData())
    second = session.send(make_message(2), BeforeData())

    assert first.status is Status.SENT
    assert (second.status, second.code, second.transient) == (Status.DEFERRED, 421, True)
    assert second.session_closed and not first.session_closed  # the session's verdict
    assert not session.connected
    session.connect()
    assert session.send(make_message(2), BeforeData()).status is Status.SENT
    session.close()
    assert smtp_server_421.message_ids() == ["<row-1@batchmail.test>", "<row-2@batchmail.test>"]


def test_no_reply_to_the_data_within_data_timeout_is_unknown(
    smtp_server_stalling: SmtpTestServer,
) -> None:
    before_data = BeforeData()
    # A minute for each command: only data_timeout can end the wait within half of it,
    # however busy the machine.
    session = connected(smtp_server_stalling, timeout=60, data_timeout=0.5)
    started = time.monotonic()
    outcome = session.send(make_message(), before_data)

    assert time.monotonic() - started < 30  # data_timeout, not timeout (60 s), applied
    assert (outcome.status, outcome.code) == (Status.UNKNOWN, None)
    assert outcome.reply.startswith(LOST_AFTER_DATA)
    assert before_data.calls == 1
    assert not session.connected


def test_connection_refused_is_server_unreachable_for_good(closed_port: int) -> None:
    config = replace(
        make_smtp_config(SmtpTestServer()), host="127.0.0.1", port=closed_port, timeout=2.0
    )
    with pytest.raises(ServerUnreachable) as caught:
        SmtpSession(config).connect()
    assert str(caught.value).startswith(f"127.0.0.1:{closed_port}: connection refused (")
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", closed_port)
    assert isinstance(caught.value, RunAborted)
    assert not caught.value.transient  # nothing listens there: the runner does not retry


def test_no_greeting_within_timeout_is_server_unreachable() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = replace(
            make_smtp_config(SmtpTestServer()), host="127.0.0.1", port=port, timeout=0.3
        )
        with pytest.raises(ServerUnreachable, match=rf"127.0.0.1:{port}: no answer within 0.3s"):
            SmtpSession(config).connect()


# --- dot-stuffing -----------------------------------------------------------------------------


def _as_server_reads(payload: bytes) -> bytes:
    """What an SMTP server makes of a DATA payload (RFC 5321 4.5.2)."""
    lines = payload.split(b"\r\n")
    end = lines.index(b".")
    assert lines[end + 1 :] == [b""]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:end])


@given(st.lists(st.sampled_from([b"", b".", b"..", b".a", b"a.", b"x", b"\r", b"\n", b"\r\n"])))
def test_dot_stuffing_round_trips(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert _as_server_reads(dot_stuff(data)) == normalised


@given(st.lists(st.sampled_from([b"", b".", b"..", b".a", b"a.", b"x", b"\r\n"])))
def test_what_a_message_tells_of_its_lines_changes_nothing_when_true(pieces: list[bytes]) -> None:
    # crlf_only and dot_lines=False skip scans; when they are true the payload is the same.
    data = b"".join(pieces) + b"\r\n"
    dots = data.startswith(b".") or b"\n." in data
    assert dot_stuff(data, crlf_only=True, dot_lines=dots) == dot_stuff(data)
    assert crlf_lines(data, crlf_only=True) == crlf_lines(data)


@given(st.lists(st.sampled_from([b".", b"..", b"a.b", b"x", b"\r\n", b"\r\n."]), max_size=200))
def test_dot_lines_are_found_among_many_dots_or_few(pieces: list[bytes]) -> None:
    # Past a few dots the search changes its way: both must agree with the definition.
    data = b"".join(pieces)
    expected = re.search(rb"(?m)^\.", data) is not None
    assert has_dot_lines(data) == expected
    # Long data goes from dot to dot: padded past the short way's limit, the same answer.
    padding = b"x" * (16 * 1024) + b"\r\n"
    assert has_dot_lines(padding + data) == expected


@given(
    st.lists(st.lists(st.sampled_from([b"", b".", b"..", b".a", b"a.", b"x", b"\r\n"]))),
    st.booleans(),
)
def test_a_message_in_parts_goes_out_as_the_whole_would(
    parts: list[list[bytes]], crlf_only: bool
) -> None:
    # Dots doubled part by part (a dot may begin a part, or a line end may close the one
    # before), and no part copied that needs no change.
    pieces = tuple(b"".join(part) for part in parts) + (b"\r\n",)
    data = b"".join(pieces)
    message = replace(make_message(), parts=pieces, crlf_only=crlf_only)
    stuffed = payload(message, chunking=False)
    assert b"".join(stuffed) == dot_stuffed(data)
    assert b"".join(payload(message, chunking=True)) == crlf_lines(data)
    if crlf_only:
        assert all(
            out is part for out, part in zip(stuffed, pieces, strict=True) if b"." not in part
        )


def test_composed_message_bytes_are_unchanged_by_stuffing() -> None:
    message: ComposedMessage = make_message(body="no dots here\n")
    assert dot_stuff(message.data) == message.data + b".\r\n"


@given(st.lists(st.sampled_from([b"", b".", b"..", b".a", b"a.", b"x", b"\r", b"\n", b"\r\n"])))
def test_dot_stuffing_skips_only_what_it_would_not_change(pieces: list[bytes]) -> None:
    # The CRLF-only, no-leading-dot shortcut must give what the substitutions give.
    data = b"".join(pieces)
    lines = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    assert dot_stuff(data) == re.sub(rb"(?m)^\.", b"..", lines) + b".\r\n"
