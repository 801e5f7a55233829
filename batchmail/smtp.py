"""One SMTP session over smtplib: connect, verified TLS, AUTH, and one transaction per message.

This is the only module that imports smtplib, socket or ssl, and their errors stop here:
problems with the connection raise ``RunAborted`` (``ServerUnreachable`` when trying again
later may help); the result of each message is an ``Outcome`` value, never an exception.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from batchmail.campaign import SmtpConfig
from batchmail.errors import RunAborted
from batchmail.outcomes import ComposedMessage, Outcome, RecipientRefusal, Status
from batchmail.transport import BeforeData, send_one_by_one

LOST_BEFORE_DATA = "connection lost before the message was sent"
LOST_AFTER_DATA = "connection lost after the message data was sent; it may have been delivered"
_QUIT_TIMEOUT = 5.0  # a server that is gone should not hold up the end of a run
_MECHANISMS = {"CRAM-MD5", "PLAIN", "LOGIN"}  # what smtplib's login() can speak
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_START_DOT = re.compile(rb"^\.", re.MULTILINE)


class ServerUnreachable(RunAborted):
    """The server could not be reached, or was not available; a later attempt may work."""

    transient = True  # the runner retries connect() with backoff on this

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class _ProtocolError(Exception):
    """The server answered something that is not an SMTP reply."""


class _Unsendable(Exception):
    """This server cannot carry the message; the text says why."""


@dataclass(frozen=True)
class _Transaction:
    """An envelope as it goes on the wire."""

    mail_from: str
    rcpt_tos: tuple[tuple[str, str], ...]  # (address as given, address as sent)
    mail_options: str
    command_encoding: str


class SmtpSession:
    """A reusable SMTP connection that sends ``ComposedMessage``s and returns ``Outcome``s.

    ``connect()`` raises ``RunAborted``/``ServerUnreachable``; ``send()`` never raises for a
    problem with one message. After a dropped connection or a 421, ``connected`` is False and
    the caller decides whether to ``connect()`` again.
    """

    def __init__(
        self,
        config: SmtpConfig,
        password: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self._config = config
        self._password = password
        self._host = host if host is not None else config.host
        self._port = port if port is not None else config.port
        self._smtp: smtplib.SMTP | None = None
        self._used = False  # a transaction happened on this connection: RSET before the next

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.sock is not None

    def connect(self) -> None:
        """Open a connection ready for MAIL: greeting, EHLO, TLS, AUTH (closing any old one)."""
        self.close()
        self._refuse_plaintext_password()
        context = self._tls_context() if self._config.security != "none" else None
        try:
            smtp = self._dial(context)
        except OSError as exc:  # smtplib's and ssl's errors are OSErrors too
            raise self._connect_error(exc) from exc
        try:
            self._start_session(smtp, context)
        except BaseException as exc:
            smtp.close()
            if isinstance(exc, OSError):
                raise self._connect_error(exc) from exc
            raise
        self._smtp = smtp
        self._used = False

    @property
    def window(self) -> int:
        return 1

    def send_batch(
        self, messages: Sequence[ComposedMessage], before_data: BeforeData
    ) -> list[Outcome]:
        """Several transactions, one after another; see ``transport.Transport``."""
        return send_one_by_one(self, messages, before_data)

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome:
        """One mail transaction. ``before_data`` is called once the server has said 354, just
        before the message data goes out; if it raises, the connection is dropped (so the server
        discards the transaction) and the exception propagates."""
        smtp = self._smtp
        if smtp is None or smtp.sock is None:
            raise RuntimeError("SmtpSession.send() needs connect() first")
        transaction = _transaction(smtp, message)
        if isinstance(transaction, Outcome):
            return transaction
        try:
            opened = self._open_transaction(smtp, transaction)
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
            code, text = self._send_data(smtp, message.data)
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

    # --- connecting -------------------------------------------------------------------------

    def _refuse_plaintext_password(self) -> None:
        config = self._config
        if config.username and config.security == "none" and not config.insecure_auth:
            raise RunAborted(
                f"refusing to send the password for {config.username} to {self.address} over an "
                "unencrypted connection; use security: starttls or tls, or set "
                "`insecure_auth: true` for a trusted local relay"
            )

    def _tls_context(self) -> ssl.SSLContext:
        # Verified, hostname-checked TLS; smtplib's own default context checks nothing.
        try:
            context = ssl.create_default_context(cafile=self._config.ca_file)
        except OSError as exc:  # missing file, or not PEM certificates (ssl.SSLError)
            raise RunAborted(
                f"smtp.ca_file {self._config.ca_file}: cannot load CA certificates ({exc})"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _dial(self, context: ssl.SSLContext | None) -> smtplib.SMTP:
        """Connect and read the greeting (smtplib raises SMTPConnectError unless it is 220).
        The host goes to the constructor: that is where smtplib keeps it for TLS's
        hostname check."""
        timeout = self._config.timeout
        if self._config.security == "tls":
            return smtplib.SMTP_SSL(self._host, self._port, timeout=timeout, context=context)
        return smtplib.SMTP(self._host, self._port, timeout=timeout)

    def _start_session(self, smtp: smtplib.SMTP, context: ssl.SSLContext | None) -> None:
        smtp.ehlo_or_helo_if_needed()
        if self._config.security == "starttls":
            # RFC 3207 / RFC 4954 §9: never fall back to plaintext when TLS was asked for.
            if not smtp.has_extn("starttls"):
                raise RunAborted(
                    f"{self.address} does not offer STARTTLS; refusing to continue without TLS"
                )
            smtp.starttls(context=context)
            smtp.ehlo_or_helo_if_needed()
        if self._config.username:
            self._login(smtp, self._config.username)

    def _login(self, smtp: smtplib.SMTP, username: str) -> None:
        if self._password is None:
            raise RunAborted(f"smtp.username is {username}, but no password was given")
        offered = set(smtp.esmtp_features.get("auth", "").upper().split())
        if not offered:
            raise RunAborted(
                f"{self.address} does not offer AUTH; remove smtp.username, or check that this "
                "is the right server and port"
            )
        if not offered & _MECHANISMS:
            raise RunAborted(
                f"{self.address} offers AUTH {' '.join(sorted(offered))}; batchmail can only use "
                f"{', '.join(sorted(_MECHANISMS))}"
            )
        try:
            smtp.login(username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            text = _text(exc.smtp_error).replace(self._password, "***")
            message = f"authentication refused by {self.address}: {exc.smtp_code} {text}"
            if 400 <= exc.smtp_code < 500:
                raise ServerUnreachable(message, host=self._host, port=self._port) from exc
            raise RunAborted(f"{message}; check smtp.username and the password") from exc
        except UnicodeEncodeError as exc:
            raise RunAborted(
                "the username or password contains non-ASCII characters, which batchmail "
                "cannot send in SMTP AUTH"
            ) from exc

    def _connect_error(self, exc: OSError) -> RunAborted:
        where = self.address
        if isinstance(exc, ssl.SSLCertVerificationError):
            return RunAborted(
                f"{where}: the server's TLS certificate was not accepted ({exc.verify_message}); "
                "if it is signed by a private CA, set smtp.ca_file to that CA's certificate"
            )
        if isinstance(exc, ssl.SSLError):
            return RunAborted(
                f"{where}: TLS handshake failed ({exc.reason or exc}); check smtp.port and "
                "smtp.security (port 465 is usually tls, 587 starttls)"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                return ServerUnreachable(
                    f"{where}: the server is not available now: {reply}",
                    host=self._host,
                    port=self._port,
                )
            return RunAborted(f"{where}: the server refused the session: {reply}")
        if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
            exc, smtplib.SMTPException
        ):
            return ServerUnreachable(
                f"{where}: {_network_summary(exc, self._config.timeout)} ({exc})",
                host=self._host,
                port=self._port,
            )
        return RunAborted(f"{where}: {exc}")

    # --- one transaction ----------------------------------------------------------------------

    def _open_transaction(
        self, smtp: smtplib.SMTP, transaction: _Transaction
    ) -> Outcome | tuple[RecipientRefusal, ...]:
        """RSET if needed, MAIL, every RCPT and DATA: the refused recipients once the server
        has said 354, or the outcome that ends the transaction early."""
        if self._used:
            code, text = _command(smtp, "rset")
            if code != 250:
                self._drop()  # a server that cannot reset is in no state for more mail
                return Outcome(Status.DEFERRED, code, f"RSET refused: {text}", transient=True)
        self._used = True
        smtp.command_encoding = transaction.command_encoding
        code, text = _command(
            smtp, "mail", f"FROM:<{transaction.mail_from}>{transaction.mail_options}"
        )
        if not 200 <= code < 300:
            return self._refusal(code, text)
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
            return _all_refused(tuple(refused))
        code, text = _command(smtp, "data")
        if code != 354:
            return self._refusal(code, text, tuple(refused))
        return tuple(refused)

    def _send_data(self, smtp: smtplib.SMTP, data: bytes) -> tuple[int, str]:
        smtp.send(dot_stuff(data))
        sock = smtp.sock
        assert sock is not None  # send() raises when the socket is gone
        # RFC 5321 4.5.3.2.6: the server may take long to accept the data; other replies may not.
        sock.settimeout(self._config.data_timeout)
        code, reply = smtp.getreply()
        sock.settimeout(self._config.timeout)
        return code, _text(reply)

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


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends (a bare CR or LF is never sent), a dot doubled at the
    start of a line (RFC 5321 4.5.2), and the closing CRLF.CRLF."""
    stuffed = _LINE_START_DOT.sub(b"..", _LINE_END.sub(b"\r\n", data))
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _transaction(smtp: smtplib.SMTP, message: ComposedMessage) -> _Transaction | Outcome:
    """The envelope in wire form, or FAILED when this server cannot carry it."""
    envelope = message.envelope
    smtputf8 = smtp.has_extn("smtputf8")
    try:
        mail_from = _wire_address("sender", envelope.mail_from, smtputf8)
        rcpt_tos = [_wire_address("recipient", a, smtputf8) for a in envelope.rcpt_tos]
        if not message.data.isascii() and not smtp.has_extn("8bitmime"):
            raise _Unsendable("the message has 8-bit data, and the server does not offer 8BITMIME")
    except _Unsendable as exc:
        return Outcome(Status.FAILED, None, str(exc))
    # Non-ASCII survives _wire_address only when the server offers SMTPUTF8.
    needs_smtputf8 = not all(a.isascii() for a in [mail_from, *rcpt_tos])
    options = [f"SIZE={len(message.data)}"] if smtp.has_extn("size") else []
    if not message.data.isascii():
        options.append("BODY=8BITMIME")
    if needs_smtputf8:
        options.append("SMTPUTF8")
    return _Transaction(
        mail_from=mail_from,
        rcpt_tos=tuple(zip(envelope.rcpt_tos, rcpt_tos, strict=True)),
        mail_options="".join(f" {option}" for option in options),
        command_encoding="utf-8" if needs_smtputf8 else "ascii",
    )


def _wire_address(role: str, address: str, smtputf8: bool) -> str:
    """The address for MAIL/RCPT: a non-ASCII domain in IDNA form, a non-ASCII local part
    only with SMTPUTF8 (RFC 6531)."""
    if _CONTROL.search(address):
        raise _Unsendable(f"{role} {address!r} contains control characters")
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not local.isascii():
        if not smtputf8:
            raise _Unsendable(f"{role} {address} needs SMTPUTF8, which the server does not offer")
        return address
    try:
        return f"{local}{at}{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise _Unsendable(f"{role} {address}: the domain is not valid IDNA ({exc})") from exc


def _command(smtp: smtplib.SMTP, verb: str, argument: str = "") -> tuple[int, str]:
    code, reply = smtp.docmd(verb, argument)
    if not 200 <= code < 600:
        raise _ProtocolError(f"the server answered {verb.upper()} with {reply!r}")
    return code, _text(reply)


def _all_refused(refused: tuple[RecipientRefusal, ...]) -> Outcome:
    """No recipient accepted: FAILED when every refusal is permanent, else DEFERRED with the
    first transient refusal's reply (a retry may reach those recipients)."""
    transient = [r for r in refused if not 500 <= r.code < 600]
    if not transient:
        return Outcome(Status.FAILED, refused[0].code, refused[0].reply, refused)
    return Outcome(Status.DEFERRED, transient[0].code, transient[0].reply, refused, transient=True)


def _text(reply: bytes | str) -> str:
    """A reply's text on one line (smtplib joins the lines of a multiline reply with LF)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split("\n"))


def _network_summary(exc: OSError, timeout: float) -> str:
    # smtplib reports a read that timed out as SMTPServerDisconnected; the cause tells.
    cause = exc.__context__ if isinstance(exc, smtplib.SMTPServerDisconnected) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(cause, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    return "network error"
