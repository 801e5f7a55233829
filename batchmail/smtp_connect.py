"""Opening an SMTP connection ready for mail: greeting, EHLO, verified TLS, AUTH; every
smtplib/ssl/socket error on the way translated into ``RunAborted`` or ``ServerUnreachable``."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from batchmail.campaign import SmtpConfig
from batchmail.errors import RunAborted
from batchmail.smtp_dialogue import DebugLog, LoggedSMTP, LoggedSMTP_SSL, tune

_MECHANISMS = {"CRAM-MD5", "PLAIN", "LOGIN"}  # what smtplib's login() can speak


class ServerUnreachable(RunAborted):
    """The server could not be reached, or was not available; a later attempt may work."""

    transient = True  # the runner retries connect() with backoff on this

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


@dataclass(frozen=True)
class Endpoint:
    """Where to connect, and how (``config`` says TLS, timeouts, username)."""

    config: SmtpConfig
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def unreachable(self, message: str) -> ServerUnreachable:
        return ServerUnreachable(message, host=self.host, port=self.port)


def open_connection(
    endpoint: Endpoint, password: str | None, debug: Callable[[str], None] | None
) -> smtplib.SMTP:
    """A connection ready for MAIL, or ``RunAborted``/``ServerUnreachable``."""
    config = endpoint.config
    _refuse_plaintext_password(endpoint)
    context = _tls_context(config) if config.security != "none" else None
    log = DebugLog(debug, password) if debug else None
    try:
        smtp = _dial(endpoint, context, log)
    except OSError as exc:  # smtplib's and ssl's errors are OSErrors too
        raise _connect_error(endpoint, exc) from exc
    try:
        _start_session(endpoint, smtp, context, password)
    except BaseException as exc:
        smtp.close()
        if isinstance(exc, OSError):
            raise _connect_error(endpoint, exc) from exc
        raise
    return smtp


def reply_text(reply: bytes | str) -> str:
    """A reply's text on one line (smtplib joins the lines of a multiline reply with LF)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split("\n"))


def _refuse_plaintext_password(endpoint: Endpoint) -> None:
    config = endpoint.config
    if config.username and config.security == "none" and not config.insecure_auth:
        raise RunAborted(
            f"refusing to send the password for {config.username} to {endpoint.address} over "
            "an unencrypted connection; use security: starttls or tls, or set "
            "`insecure_auth: true` for a trusted local relay"
        )


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    # Verified, hostname-checked TLS; smtplib's own default context checks nothing.
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except OSError as exc:  # missing file, or not PEM certificates (ssl.SSLError)
        raise RunAborted(
            f"smtp.ca_file {config.ca_file}: cannot load CA certificates ({exc})"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _dial(endpoint: Endpoint, context: ssl.SSLContext | None, log: DebugLog | None) -> smtplib.SMTP:
    """Connect and read the greeting (smtplib raises SMTPConnectError unless it is 220).
    The host goes to the constructor: that is where smtplib keeps it for TLS's
    hostname check."""
    timeout = endpoint.config.timeout
    smtp: smtplib.SMTP
    if endpoint.config.security == "tls":
        smtp = LoggedSMTP_SSL(
            endpoint.host, endpoint.port, timeout=timeout, context=context, debug_log=log
        )
    else:
        smtp = LoggedSMTP(endpoint.host, endpoint.port, timeout=timeout, debug_log=log)
    if smtp.sock is not None:
        tune(smtp.sock)
    return smtp


def _start_session(
    endpoint: Endpoint,
    smtp: smtplib.SMTP,
    context: ssl.SSLContext | None,
    password: str | None,
) -> None:
    smtp.ehlo_or_helo_if_needed()
    if endpoint.config.security == "starttls":
        # RFC 3207 / RFC 4954 §9: never fall back to plaintext when TLS was asked for.
        if not smtp.has_extn("starttls"):
            raise RunAborted(
                f"{endpoint.address} does not offer STARTTLS; refusing to continue without TLS"
            )
        smtp.starttls(context=context)
        smtp.ehlo_or_helo_if_needed()
    if endpoint.config.username:
        _login(endpoint, smtp, endpoint.config.username, password)


def _login(endpoint: Endpoint, smtp: smtplib.SMTP, username: str, password: str | None) -> None:
    if password is None:
        raise RunAborted(f"smtp.username is {username}, but no password was given")
    offered = set(smtp.esmtp_features.get("auth", "").upper().split())
    if not offered:
        raise RunAborted(
            f"{endpoint.address} does not offer AUTH; remove smtp.username, or check that "
            "this is the right server and port"
        )
    if not offered & _MECHANISMS:
        raise RunAborted(
            f"{endpoint.address} offers AUTH {' '.join(sorted(offered))}; batchmail can only "
            f"use {', '.join(sorted(_MECHANISMS))}"
        )
    try:
        smtp.login(username, password)
    except smtplib.SMTPAuthenticationError as exc:
        text = reply_text(exc.smtp_error).replace(password, "***")
        message = f"authentication refused by {endpoint.address}: {exc.smtp_code} {text}"
        if 400 <= exc.smtp_code < 500:
            raise endpoint.unreachable(message) from exc
        raise RunAborted(f"{message}; check smtp.username and the password") from exc
    except UnicodeEncodeError as exc:
        raise RunAborted(
            "the username or password contains non-ASCII characters, which batchmail "
            "cannot send in SMTP AUTH"
        ) from exc


def _connect_error(endpoint: Endpoint, exc: OSError) -> RunAborted:
    where = endpoint.address
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
        reply = f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            return endpoint.unreachable(f"{where}: the server is not available now: {reply}")
        return RunAborted(f"{where}: the server refused the session: {reply}")
    if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
        exc, smtplib.SMTPException
    ):
        summary = _network_summary(exc, endpoint.config.timeout)
        return endpoint.unreachable(f"{where}: {summary} ({exc})")
    return RunAborted(f"{where}: {exc}")


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
