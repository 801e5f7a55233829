"""One SMTP session over smtplib: connect, verified TLS, AUTH, and the mail transactions,
one at a time or pipelined.

With this module's helpers (``smtp_*.py``) it is the only code that touches smtplib, socket
or ssl, and their errors stop here: problems with the connection raise ``RunAborted``
(``ServerUnreachable`` when trying again later may help); the result of each message is an
``Outcome`` value, never an exception.

    smtp.py            SmtpSession: connect(), send(), send_batch(), window, close()
    smtp_connect.py    greeting, EHLO, verified TLS, AUTH; connection errors translated
    smtp_pipeline.py   a window of transactions pipelined (RFC 2920), DATA or BDAT (RFC 3030)
    smtp_wire.py       non-blocking duplex I/O under the pipeline
    smtp_replies.py    pure: replies parsed, and what they mean for one transaction
    smtp_envelope.py   pure: a message in wire form (MAIL/RCPT arguments, DATA/BDAT payload)
    smtp_dialogue.py   the redacted debug log; smtplib's classes wired to it
    smtp_certificate.py  the names a certificate is for, when not for the host connected to
    secret_forms.py    pure: every form of a password or token a server could echo, redacted
"""

from __future__ import annotations

import dataclasses
import functools
import smtplib
from collections.abc import Callable, Sequence
from types import TracebackType

from batchmail.campaign import SmtpConfig
from batchmail.outcomes import ComposedMessage, Outcome, RecipientRefusal, Status
from batchmail.secret_forms import SecretForms
from batchmail.smtp_connect import Endpoint, ServerUnreachable, open_connection, reply_text
from batchmail.smtp_dialogue import LoggedSMTP, LoggedSMTP_SSL
from batchmail.smtp_envelope import END_OF_DATA, Transaction, dot_stuff, payload, transaction
from batchmail.smtp_pipeline import Pipeline
from batchmail.smtp_replies import LOST_AFTER_DATA, LOST_BEFORE_DATA, all_refused
from batchmail.smtp_wire import Wire
from batchmail.transport import Answered, BeforeData, CarryOn, send_one_by_one

__all__ = [
    "LOST_AFTER_DATA",
    "LOST_BEFORE_DATA",
    "ServerUnreachable",
    "SmtpSession",
    "dot_stuff",
]

_QUIT_TIMEOUT = 5.0  # a server that is gone should not hold up the end of a run
# Messages per batch when the campaign does not say (send.window). Measured with 2 KB
# messages through a relay adding 2 ms / 10 ms of round trip: BDAT against Postfix smtpd went
# 174 / 66 msg/s at window 1, 434 / 297 at 8, 529 / 287 at 32, 526 / 282 at 64 (Postfix itself
# tops out near 500/s here); pipelined DATA costs one round trip per message whatever the
# window, plus one per window: 115 / 38 at window 1, 174 / 64 at 8, 176 / 73 at 32, 176 / 69 at
# 64. One at a time: 54 / 17. A larger window also means fewer journal commits per message,
# but more messages in doubt when the process is killed mid-window. At 50 ms, where a window
# costs a round trip plus Postfix's ~2 ms per message, a whole `batchmail run` of 1,000
# messages went 181 msg/s at BDAT window 32, 219 at 64, 210 at 128: hence 64 for BDAT. (A
# dropped connection shrinks the window for a while: see _adapt_ceiling.) With DATA a batch
# has only one message's data out at a time, so its size costs no doubt; each batch costs a
# round trip, a synced journal write and a fold of the side log: 10,000 2 KB messages to
# smtp-sink on loopback, five runs of each taken in turn, were sent in a median 5.1 s in
# batches of 32 and 4.6 s in batches of 256 (this machine's speed drifts by up to a third).
WINDOW_CHUNKING = 64
WINDOW_PIPELINING = 256
# A BDAT batch is this many windows: the window slides through it as replies come, and the
# journal reserves the batch with one sync (smtp_pipeline, runner).
WINDOWS_PER_BATCH = 4


class _ProtocolError(Exception):
    """The server answered something that is not an SMTP reply."""


class SmtpSession:
    """A reusable SMTP connection that sends ``ComposedMessage``s and returns ``Outcome``s.

    ``connect()`` raises ``RunAborted``/``ServerUnreachable``; ``send()`` and ``send_batch()``
    never raise for a problem with a message. After a dropped connection or a 421,
    ``connected`` is False and the caller decides whether to ``connect()`` again.

    ``window``: messages per pipelined batch (the campaign's ``send.window``); 0 lets the
    session choose. ``debug``: called with each line of the dialogue, secrets redacted
    (see ``smtp_dialogue``).
    """

    def __init__(
        self,
        config: SmtpConfig,
        password: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        window: int = 0,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._password = password
        self._secrets = SecretForms([password])  # and each line AUTH sends, as it goes
        self._endpoint = Endpoint(
            config,
            host if host is not None else config.host,
            port if port is not None else config.port,
        )
        self._window = window
        # After a connection dropped with a BDAT window unanswered (every message in it
        # `unknown`), batches stay at most this big, doubling back with each batch that
        # goes through: a flaky link then costs a few unknowns per drop, not a window.
        self._ceiling: int | None = None
        self._debug = debug
        self._smtp: smtplib.SMTP | None = None
        self._used = False  # a transaction happened on this connection: RSET before the next

    @property
    def address(self) -> str:
        return self._endpoint.address

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.sock is not None

    def connect(self) -> None:
        """Open a connection ready for MAIL: greeting, EHLO, TLS, AUTH (closing any old one).
        Raises ``RunAborted``, or ``ServerUnreachable`` when a later attempt may work."""
        self.close()
        self._smtp = open_connection(self._endpoint, self._password, self._debug, self._secrets)
        self._used = False

    @property
    def pipelining(self) -> str | None:
        """How this connection sends a batch: "chunking" (BDAT, RFC 3030), "pipelining"
        (DATA, RFC 2920), or None (one command at a time, as any server understands)."""
        smtp = self._smtp
        if smtp is None or not smtp.has_extn("pipelining"):
            return None
        return "chunking" if smtp.has_extn("chunking") else "pipelining"

    @property
    def window(self) -> int:
        """How many messages a batch should have: 1 without pipelining (or before connect,
        when it is not known yet); with DATA, ``window`` as given or the measured default;
        with BDAT, several windows, which slide through the batch (see smtp_pipeline)."""
        mode = self.pipelining
        if mode is None:
            return 1
        return self._in_flight(mode) * (WINDOWS_PER_BATCH if mode == "chunking" else 1)

    def _in_flight(self, mode: str) -> int:
        size = self._configured_window(mode)
        return min(size, self._ceiling) if self._ceiling else size

    def _configured_window(self, mode: str) -> int:
        if self._window:
            return self._window
        return WINDOW_CHUNKING if mode == "chunking" else WINDOW_PIPELINING

    def send_batch(
        self,
        messages: Sequence[ComposedMessage],
        before_data: BeforeData,
        answered: Answered | None = None,
        carry_on: CarryOn | None = None,
    ) -> list[Outcome]:
        """One outcome per message, in order; see ``transport.Transport``. Pipelined when the
        server offers it (``before_data`` then comes once per window with BDAT, once per
        message with DATA), else one transaction after another. After AUTH, no reply holds
        a form of the secret (see ``_redacted``)."""
        if not self._password:
            return self._send_batch(messages, before_data, answered, carry_on)
        heard = None if answered is None else functools.partial(self._heard, answered)
        outcomes = self._send_batch(messages, before_data, heard, carry_on)
        return [self._redacted(outcome) for outcome in outcomes]

    def _heard(self, answered: Answered, message: ComposedMessage, outcome: Outcome) -> None:
        answered(message, self._redacted(outcome))

    def _redacted(self, outcome: Outcome) -> Outcome:
        """The outcome with every form of the secret that went in AUTH taken out of the
        server's replies, before they are journalled or shown: a server may echo them."""
        redact = self._secrets.redact
        reply = redact(outcome.reply)
        refused = tuple(dataclasses.replace(r, reply=redact(r.reply)) for r in outcome.refused)
        if reply == outcome.reply and refused == outcome.refused:
            return outcome
        return dataclasses.replace(outcome, reply=reply, refused=refused)

    def _send_batch(
        self,
        messages: Sequence[ComposedMessage],
        before_data: BeforeData,
        answered: Answered | None,
        carry_on: CarryOn | None,
    ) -> list[Outcome]:
        smtp = self._smtp
        mode = self.pipelining
        if smtp is None or smtp.sock is None or mode is None:
            return send_one_by_one(self, messages, before_data, answered, carry_on)
        outcomes: list[Outcome | None] = []
        window: list[tuple[ComposedMessage, Transaction]] = []
        for message in messages:
            envelope = transaction(message, smtp.esmtp_features)
            outcomes.append(envelope if isinstance(envelope, Outcome) else None)
            if not isinstance(envelope, Outcome):
                window.append((message, envelope))
        pipelined = iter(
            self._pipeline(smtp, window, before_data, answered, carry_on, mode == "chunking")
        )
        return [outcome if outcome is not None else next(pipelined) for outcome in outcomes]

    def _pipeline(
        self,
        smtp: smtplib.SMTP,
        window: list[tuple[ComposedMessage, Transaction]],
        before_data: BeforeData,
        answered: Answered | None,
        carry_on: CarryOn | None,
        chunking: bool,
    ) -> list[Outcome]:
        if not window:
            return []
        assert smtp.sock is not None
        wire = Wire(smtp.sock, getattr(smtp, "debug_log", None))
        pipeline = Pipeline(
            wire,
            chunking=chunking,
            reset_first=self._used,
            timeout=self._config.timeout,
            data_timeout=self._config.data_timeout,
            in_flight=self._in_flight("chunking") if chunking else 0,
        )
        self._used = True
        try:
            result = pipeline.run(window, before_data, answered, carry_on)
        except BaseException:
            self._drop()  # mid-window: only closing the connection makes the server forget it
            raise
        finally:
            wire.close()
        if not result.usable:
            self._drop()
        if chunking:
            self._adapt_ceiling(self._in_flight("chunking"), result.outcomes)
        return result.outcomes

    def _adapt_ceiling(self, size: int, outcomes: Sequence[Outcome]) -> None:
        unknown = sum(outcome.status is Status.UNKNOWN for outcome in outcomes)
        if unknown > 1:
            self._ceiling = max(1, size // 4)
        elif self._ceiling is not None and not unknown:
            self._ceiling *= 2
            if self._ceiling >= self._configured_window("chunking"):
                self._ceiling = None

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome:
        """One mail transaction. ``before_data`` is called just before the message data goes
        out (without pipelining: once the server has said 354); if it raises, the connection
        is dropped (so the server discards the transaction) and the exception propagates."""
        outcome = self._send_one(message, before_data)
        return self._redacted(outcome) if self._password else outcome

    def _send_one(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome:
        smtp = self._smtp
        if smtp is None or smtp.sock is None:
            raise RuntimeError("SmtpSession.send() needs connect() first")
        if self.pipelining is not None:
            (outcome,) = self.send_batch([message], lambda going: before_data())
            return outcome
        envelope = transaction(message, smtp.esmtp_features)
        if isinstance(envelope, Outcome):
            return envelope
        try:
            opened = self._open_transaction(smtp, envelope)
        except (OSError, _ProtocolError) as exc:
            self._drop()
            return Outcome(Status.DEFERRED, None, f"{LOST_BEFORE_DATA}: {exc}", transient=True)
        if isinstance(opened, Outcome):
            return opened
        try:
            before_data()
        except BaseException:
            self._drop()
            raise
        try:
            code, text = self._send_data(smtp, message)
        except OSError as exc:
            self._drop()
            return Outcome(Status.UNKNOWN, None, f"{LOST_AFTER_DATA} ({exc})")
        return self._final(code, text, opened)

    def close(self) -> None:
        """Say QUIT and close; never raises."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.sock.settimeout(min(self._config.timeout, _QUIT_TIMEOUT))
                smtp.quit()
        except OSError:
            pass  # the server is gone already: closing our end is all that is left
        finally:
            smtp.close()

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- one transaction ----------------------------------------------------------------------

    def _open_transaction(
        self, smtp: smtplib.SMTP, transaction: Transaction
    ) -> Outcome | tuple[RecipientRefusal, ...]:
        """RSET if needed, MAIL, every RCPT and DATA: the refused recipients once the server
        has said 354, or the outcome that ends the transaction early."""
        if self._used:
            code, text = _command(smtp, "rset")
            if code != 250:
                self._drop()  # a server that cannot reset is in no state for more mail
                return Outcome(
                    Status.DEFERRED,
                    code,
                    f"RSET refused: {text}",
                    transient=True,
                    session_closed=code == 421,
                )
        self._used = True
        smtp.command_encoding = transaction.command_encoding
        code, text = _command(
            smtp, "mail", f"FROM:<{transaction.mail_from}>{transaction.mail_options}"
        )
        if not 200 <= code < 300:
            outcome = self._refusal(code, text)
            return dataclasses.replace(outcome, session_closed=code == 421)
        refused: list[RecipientRefusal] = []
        accepted = 0
        for given, sent in transaction.rcpt_tos:
            code, text = _command(smtp, "rcpt", f"TO:<{sent}>")
            if code == 421:
                return self._refusal(code, text, tuple(refused))
            if 200 <= code < 300:
                accepted += 1
            else:
                refused.append(RecipientRefusal(given, code, text))
        if not accepted:
            return all_refused(tuple(refused))
        code, text = _command(smtp, "data")
        if code != 354:
            return self._refusal(code, text, tuple(refused))
        return tuple(refused)

    def _send_data(self, smtp: smtplib.SMTP, message: ComposedMessage) -> tuple[int, str]:
        assert isinstance(smtp, LoggedSMTP | LoggedSMTP_SSL)
        # Part by part: a large attachment goes from the one copy the run holds.
        smtp.send_data((*payload(message, chunking=False), END_OF_DATA))
        sock = smtp.sock
        assert sock is not None  # send() raises when the socket is gone
        # RFC 5321 4.5.3.2.6: the server may take long to accept the data; other replies may not.
        sock.settimeout(self._config.data_timeout)
        code, reply = smtp.getreply()
        sock.settimeout(self._config.timeout)
        return code, reply_text(reply)

    def _final(self, code: int, text: str, refused: tuple[RecipientRefusal, ...]) -> Outcome:
        if 200 <= code < 300:
            return Outcome(Status.SENT, code, text, refused)
        if 400 <= code < 600:
            return self._refusal(code, text, refused)
        self._drop()
        return Outcome(
            Status.UNKNOWN,
            None,
            f"unexpected reply to the message data ({code} {text}); it may have been delivered",
            refused,
        )

    def _refusal(self, code: int, text: str, refused: tuple[RecipientRefusal, ...] = ()) -> Outcome:
        if code == 421 or not 400 <= code < 600:
            # 421: the server is closing the connection; anything else: it lost track of us.
            self._drop()
        if 500 <= code < 600:
            return Outcome(Status.FAILED, code, text, refused)
        return Outcome(Status.DEFERRED, code, text, refused, transient=True)

    def _drop(self) -> None:
        """Close without QUIT, e.g. when the connection is broken or mid-DATA."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def _command(smtp: smtplib.SMTP, verb: str, argument: str = "") -> tuple[int, str]:
    code, reply = smtp.docmd(verb, argument)
    if not 200 <= code < 600:
        raise _ProtocolError(f"the server answered {verb.upper()} with {reply!r}")
    return code, reply_text(reply)
