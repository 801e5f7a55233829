"""Opening an SMTP connection ready for mail: greeting, EHLO, verified TLS, AUTH (with a
password, or an OAuth2 access token over XOAUTH2); every smtplib/ssl/socket error on the way
translated into ``RunAborted`` or ``ServerUnreachable``."""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from batchmail.campaign import SmtpConfig
from batchmail.errors import RunAborted
from batchmail.secret_forms import SecretForms
from batchmail.smtp_certificate import certificate_names, is_name_mismatch
from batchmail.smtp_dialogue import DebugLog, LoggedSMTP, LoggedSMTP_SSL, tune

_MECHANISMS = {"CRAM-MD5", "PLAIN", "LOGIN"}  # what smtplib's login() can speak


class ServerUnreachable(RunAborted):
    """The server could not be reached, or was not available. ``transient`` (the runner
    retries connect() with backoff) unless trying again at once cannot help: nothing
    listens on the port, or the host name does not resolve."""

    def __init__(self, message: str, *, host: str, port: int, transient: bool = True) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.transient = transient


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

    def unreachable(self, message: str, transient: bool = True) -> ServerUnreachable:
        return ServerUnreachable(message, host=self.host, port=self.port, transient=transient)


def open_connection(
    endpoint: Endpoint,
    password: str | None,
    debug: Callable[[str], None] | None,
    secrets: SecretForms | None = None,
) -> smtplib.SMTP:
    """A connection ready for MAIL, or ``RunAborted``/``ServerUnreachable``. ``password`` is
    the access token when the account has ``oauth2_token_command``. Every line AUTH sends is
    added to ``secrets`` (made from ``password`` when not given), for later replies."""
    config = endpoint.config
    _refuse_plaintext_password(endpoint)
    context = _tls_context(config) if config.security != "none" else None
    secrets = secrets if secrets is not None else SecretForms([password])
    log = DebugLog(debug, secrets) if debug else None
    try:
        smtp = _dial(endpoint, context, log)
    except OSError as exc:  # smtplib's and ssl's errors are OSErrors too
        raise _connect_error(endpoint, exc) from exc
    try:
        _start_session(endpoint, smtp, context, secrets, password)
    except BaseException as exc:
        smtp.close()
        if isinstance(exc, OSError):
            raise _connect_error(endpoint, exc, secrets) from exc
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
            f"refusing to send the {_secret_name(config)} for {config.username} to "
            f"{endpoint.address} over an unencrypted connection; use security: starttls or tls, "
            "or set `insecure_auth: true` for a trusted local relay"
        )


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    # Verified, hostname-checked TLS; smtplib's own default context checks nothing.
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except OSError as exc:  # missing file, or not PEM certificates (ssl.SSLError)
        raise RunAborted(
            f"{config.key_path}.ca_file {config.ca_file}: cannot load CA certificates ({exc})"
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
    secrets: SecretForms,
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
        _login(endpoint, smtp, secrets, password)


def _login(
    endpoint: Endpoint, smtp: smtplib.SMTP, secrets: SecretForms, secret: str | None
) -> None:
    """AUTH, every line sent noted in ``secrets`` (a server may echo it in its refusal).
    The errors raised do not chain smtplib's: its reply, or the string that failed to encode,
    holds what was just redacted."""
    config = endpoint.config
    username = config.username or ""
    _check_mechanisms(endpoint, smtp, secret)
    assert secret is not None  # _check_mechanisms refuses a missing secret
    oauth2 = bool(config.oauth2_token_command)
    xoauth2 = _XOauth2(username, secret, secrets)
    smtp.auth_sent = secrets  # type: ignore[attr-defined]
    try:
        if oauth2:
            smtp.auth(_XOAUTH2, xoauth2, initial_response_ok=True)
        else:
            smtp.login(username, secret)
    except smtplib.SMTPAuthenticationError as exc:
        text = secrets.redact(reply_text(exc.smtp_error))
        message = f"authentication refused by {endpoint.address}: {exc.smtp_code} {text}"
        if oauth2:
            message += xoauth2.error_status()
        if 400 <= exc.smtp_code < 500:
            raise endpoint.unreachable(message) from None
        advice = (
            f"the token {config.key_path}.oauth2_token_command printed"
            if oauth2
            else "the password"
        )
        raise RunAborted(f"{message}; check {config.key_path}.username and {advice}") from None
    except UnicodeEncodeError:
        raise RunAborted(
            f"the username or {_secret_name(config)} contains non-ASCII characters, which "
            "batchmail cannot send in SMTP AUTH"
        ) from None
    except ValueError:  # binascii.Error: smtplib decoding a 334 challenge that is not base64
        raise RunAborted(
            f"{endpoint.address} sent an AUTH challenge that is not base64; "
            "authentication could not go on"
        ) from None
    finally:
        smtp.auth_sent = None  # type: ignore[attr-defined]


def _check_mechanisms(endpoint: Endpoint, smtp: smtplib.SMTP, secret: str | None) -> None:
    """Refuse before anything secret goes: no secret, no AUTH, or no mechanism we speak."""
    config = endpoint.config
    username = config.username
    if secret is None:
        raise RunAborted(
            f"{config.key_path}.username is {username}, but no {_secret_name(config)} was given"
        )
    offered = set(smtp.esmtp_features.get("auth", "").upper().split())
    if not offered:
        raise RunAborted(
            f"{endpoint.address} does not offer AUTH; remove {config.key_path}.username, or "
            "check that this is the right server and port"
        )
    oauth2 = bool(config.oauth2_token_command)
    if oauth2 and _XOAUTH2 not in offered:
        raise RunAborted(
            f"{endpoint.address} does not offer AUTH XOAUTH2 (it offers AUTH "
            f"{' '.join(sorted(offered))}); {config.key_path}.oauth2_token_command needs a "
            "server that takes OAuth2 access tokens (such as Gmail's or Microsoft 365's), or "
            "use password_env or password_command with this one"
        )
    if not oauth2 and not offered & _MECHANISMS:
        raise RunAborted(
            f"{endpoint.address} offers AUTH {' '.join(sorted(offered))}; batchmail can only "
            f"use {', '.join(sorted(_MECHANISMS))} with a password"
            + (" (XOAUTH2: set oauth2_token_command)" if _XOAUTH2 in offered else "")
        )


_XOAUTH2 = "XOAUTH2"


class _XOauth2:
    """smtplib's ``authobject`` for AUTH XOAUTH2 (Google's and Microsoft's SASL mechanism).

    The initial response is ``user=<username>^Aauth=Bearer <token>^A^A``. A server refusing
    the token answers 334 with a base64 JSON error (``{"status": "400", ...}``); the client
    must then send an empty line, and the server sends its final 5xx. The challenge is kept
    (its status is reported), never the response.
    """

    def __init__(self, username: str, token: str, secrets: SecretForms) -> None:
        self._username = username
        self._token = token
        self._secrets = secrets
        self._error: bytes | None = None

    def __call__(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            return f"user={self._username}\x01auth=Bearer {self._token}\x01\x01"
        self._error = challenge
        return ""

    def error_status(self) -> str:
        """What the server's error challenge said, for the error message: " (XOAUTH2 error
        status 400: ...)", or "" when it sent none."""
        if self._error is None:
            return ""
        try:
            details = json.loads(self._error.decode("utf-8"))
        except ValueError:  # not UTF-8, or not JSON
            details = None
        status = details.get("status") if isinstance(details, dict) else None
        if isinstance(status, bool) or not isinstance(status, str | int):
            return " (the server's XOAUTH2 error gave no status)"
        shown = self._secrets.redact(str(status))[:40]
        return (
            f" (XOAUTH2 error status {shown}: the access token may have expired, or not be "
            "valid for this account or for sending mail)"
        )


def _secret_name(config: SmtpConfig) -> str:
    return "access token" if config.oauth2_token_command else "password"


def _connect_error(
    endpoint: Endpoint, exc: OSError, secrets: SecretForms | None = None
) -> RunAborted:
    where = endpoint.address
    if isinstance(exc, ssl.SSLCertVerificationError) and is_name_mismatch(exc):
        return RunAborted(_name_mismatch(endpoint))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RunAborted(
            f"{where}: the server's TLS certificate was not accepted ({exc.verify_message}); "
            f"if it is signed by a private CA, set {endpoint.config.key_path}.ca_file to that "
            "CA's certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return RunAborted(
            f"{where}: TLS handshake failed ({exc.reason or exc}); check "
            f"{endpoint.config.key_path}.port and {endpoint.config.key_path}.security "
            "(port 465 is usually tls, 587 starttls)"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = f"{exc.smtp_code} {reply_text(exc.smtp_error)}"
        reply = secrets.redact(reply) if secrets is not None else reply
        if 400 <= exc.smtp_code < 500:
            return endpoint.unreachable(f"{where}: the server is not available now: {reply}")
        return RunAborted(f"{where}: the server refused the session: {reply}")
    if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
        exc, smtplib.SMTPException
    ):
        summary = _network_summary(exc, endpoint.config.timeout)
        cause = _cause(exc)
        if isinstance(cause, ConnectionRefusedError | socket.gaierror):
            # Nothing listens there, or no such host: backing off and trying again only
            # delays the message that says so.
            key = endpoint.config.key_path
            return endpoint.unreachable(
                f"{where}: {summary} ({exc}); check {key}.host and {key}.port, and that the "
                "server is running",
                transient=False,
            )
        return endpoint.unreachable(f"{where}: {summary} ({exc})")
    return RunAborted(f"{where}: {exc}")


def _cause(exc: OSError) -> BaseException | None:
    # smtplib reports a read that timed out as SMTPServerDisconnected; the cause tells.
    return exc.__context__ if isinstance(exc, smtplib.SMTPServerDisconnected) else exc


def _name_mismatch(endpoint: Endpoint) -> str:
    config = endpoint.config
    names = certificate_names(
        endpoint.host, endpoint.port, config.security == "tls", _tls_context(config), config.timeout
    )
    fix = f"set {config.key_path}.host to a name the certificate is for"
    if not names:
        return f"{endpoint.address}: the server's TLS certificate is not for {endpoint.host}; {fix}"
    # The names were read over a connection that verified the chain: it is trusted.
    return (
        f"{endpoint.address}: the server's TLS certificate is for {', '.join(names)}, not for "
        f"{endpoint.host}, the name connected to; {fix} (the certificate is trusted: "
        "ca_file would not help)"
    )


def _network_summary(exc: OSError, timeout: float) -> str:
    cause = _cause(exc)
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
