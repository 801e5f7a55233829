"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, with faults injected on the server side.

``RecordingHandler`` accepts everything and records it (messages and commands, thread-safely:
the server runs in its own thread). Each fault is a small subclass configured by attributes,
e.g. ``server.handler.drop_after = 3``, and counted in ``handler.faults``:

    RefusingHandler      550 for RCPT to addresses containing "refuse"
    DeferringHandler     451 for RCPT to addresses containing "defer" (``defer_times``)
    GreylistingHandler   both: 451 for "defer", 550 for "refuse"
    DroppingHandler      close without a reply at MAIL, RCPT or end of data (``drop_*``)
    ClosingHandler       421 and close at MAIL after ``close_after`` messages on a connection
    StallingHandler      never answer the end of data
    DataRejectingHandler  answer the end of data with ``reply`` (e.g. 554 spam, 452 full)
    HidingStarttlsHandler  STARTTLS possible but not advertised (a downgrade)
    HeloOnlyHandler      refuse EHLO, so the client must fall back to HELO
    AuthEchoingHandler   refuse AUTH PLAIN, LOGIN or XOAUTH2 with a reply that echoes
                         every line the client sent, base64 and decoded (``auth_lines``)

``SmtpTestServer`` runs a handler with optional STARTTLS, implicit TLS or AUTH, and one of
three ``Mode``s: "plain" (aiosmtpd as it is: one command at a time, DATA), "pipelining"
(PIPELINING advertised; aiosmtpd reads pipelined commands in order anyway) or "chunking"
(PIPELINING and CHUNKING: ``ChunkingSMTP`` adds BDAT to aiosmtpd; the default). With BDAT the
handler's hooks run as with DATA: ``on_data`` sees the whole message after ``BDAT n LAST``,
and ``commands`` lists "BDAT" for each chunk command, then "DATA" once a message is
complete. The fixtures in conftest.py start and stop servers. ``make_smtp_config`` and
``make_message`` build what a client needs to talk to one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.parser
import email.policy
import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from batchmail.campaign import Security, SmtpConfig
from batchmail.outcomes import ComposedMessage
from batchmail.outcomes import Envelope as MessageEnvelope
from batchmail.sink import READY_TIMEOUT, free_port

HOST = "127.0.0.1"
USERNAME = "alice"
PASSWORD = "s3cret-pw"
AUTH_MECHANISMS = ("LOGIN", "PLAIN")  # aiosmtpd's built-in mechanisms

Mode = Literal["plain", "pipelining", "chunking"]
MODES: tuple[Mode, ...] = ("plain", "pipelining", "chunking")
DEFAULT_MODE: Mode = "chunking"  # what batchmail meets in Postfix: its fastest, hardest path
_ADVERTISED: dict[str, tuple[str, ...]] = {
    "plain": (),
    "pipelining": ("PIPELINING",),
    "chunking": ("PIPELINING", "CHUNKING"),
}


@dataclass(frozen=True)
class Received:
    """One message a server accepted (or, in ``unacknowledged``, received but never answered)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly the bytes after the server undid the dot-stuffing
    mail_options: tuple[str, ...] = ()  # e.g. ("SIZE=123", "BODY=8BITMIME", "SMTPUTF8")
    tls: bool = False  # the connection was encrypted (STARTTLS or implicit TLS)

    @property
    def message_id(self) -> str | None:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(self.data)
        value = headers["Message-ID"]
        return str(value).strip() if value is not None else None


class RecordingHandler:
    """Accepts every message, recording it and every command. Subclasses inject faults by
    overriding ``on_mail``/``on_rcpt``/``on_data``: return a reply to send instead of
    accepting, or None to go on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._unacknowledged: list[Received] = []
        self._commands: list[tuple[str, str]] = []
        self.faults = 0  # faults injected so far
        self.require_auth = False  # 530 to MAIL before a successful AUTH

    # --- what tests read ----------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def unacknowledged(self) -> list[Received]:
        """Messages whose data arrived but got no reply (dropped or stalled at end of data)."""
        with self._lock:
            return list(self._unacknowledged)

    @property
    def commands(self) -> list[str]:
        """Verbs in the order received: EHLO, AUTH, MAIL, RCPT, BDAT (each chunk), DATA (at
        the end of a message's data, either way), RSET, QUIT."""
        with self._lock:
            return [verb for verb, _ in self._commands]

    @property
    def command_args(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._commands)

    def message_ids(self) -> list[str | None]:
        return [message.message_id for message in self.messages]

    # --- for subclasses -----------------------------------------------------------------

    def record(self, verb: str, argument: str = "") -> None:
        with self._lock:
            self._commands.append((verb, argument))

    def take_fault(self, limit: int | None = None) -> bool:
        """Count one more fault unless ``limit`` (None: no limit) have been injected already."""
        with self._lock:
            if limit is not None and self.faults >= limit:
                return False
            self.faults += 1
            return True

    def ehlo_responses(self, responses: list[str]) -> list[str]:
        return responses

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        return None

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        return None

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        return None

    def received(self, server: SMTP, envelope: Envelope) -> Received:
        assert server.transport is not None
        return Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            mail_options=tuple(envelope.mail_options),
            tls=server.transport.get_extra_info("ssl_object") is not None,
        )

    def keep_unacknowledged(self, message: Received) -> None:
        with self._lock:
            self._unacknowledged.append(message)

    # --- aiosmtpd hooks ---------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.record("EHLO", hostname)
        session.host_name = hostname  # a handle_EHLO hook must do what aiosmtpd otherwise does
        # Before the last line ("250 HELP"), which must stay last: only it has "250 ".
        extra = [f"250-{keyword}" for keyword in getattr(server, "advertised", ())]
        return self.ehlo_responses(responses[:-1] + extra + responses[-1:])

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.record("HELO", hostname)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.record("MAIL", address)
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        fault = await self.on_mail(server, session, address)
        if fault is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.record("RCPT", address)
        fault = await self.on_rcpt(server, session, address)
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.record("DATA")
        fault = await self.on_data(server, session, envelope)
        if fault is not None:
            return fault
        message = self.received(server, envelope)
        with self._lock:
            self._messages.append(message)
        session.accepted_here = getattr(session, "accepted_here", 0) + 1  # type: ignore[attr-defined]
        return "250 2.0.0 OK queued"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.record("RSET")
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.record("QUIT")
        return "221 Bye"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd authenticator: alice / s3cret-pw, anything else gets 535."""
        self.record("AUTH", mechanism)
        ok = (
            isinstance(data, LoginPassword)
            and data.login == USERNAME.encode()
            and data.password == PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class RefusingHandler(RecordingHandler):
    """550 for every RCPT whose address contains ``marker``; the others are accepted."""

    marker = "refuse"

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        if self.marker in address and self.take_fault():
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        return None


class DeferringHandler(RecordingHandler):
    """451 for RCPTs whose address contains ``marker``, ``defer_times`` times in all
    (None: always), then accepts them."""

    marker = "defer"
    defer_times: int | None = None

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        if self.marker in address and self.take_fault(self.defer_times):
            return "451 4.3.0 Temporary failure, try again later"
        return None


class GreylistingHandler(DeferringHandler):
    """451 for RCPTs whose address contains "defer" (``defer_times`` times in all, None:
    always) and 550 for those containing "refuse"; the others (an archive Bcc) accepted."""

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        if "refuse" in address:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        return await super().on_rcpt(server, session, address)


DropPoint = Literal["mail", "rcpt", "end_of_data"]


class DroppingHandler(RecordingHandler):
    """Closes the connection without a reply at ``drop_at``, once ``drop_after`` messages have
    been accepted (by the server, over all connections), ``drop_times`` times in all (None:
    every time). At "end_of_data" the client has sent everything and never hears back."""

    drop_at: DropPoint = "mail"
    drop_after = 0
    drop_times: int | None = 1

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        if self.drop_at == "mail":
            await self._maybe_drop(server)
        return None

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        if self.drop_at == "rcpt":
            await self._maybe_drop(server)
        return None

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        if self.drop_at == "end_of_data" and self._due():
            self.keep_unacknowledged(self.received(server, envelope))
            await self._maybe_drop(server)
        return None

    def _due(self) -> bool:
        return len(self.messages) >= self.drop_after and (
            self.drop_times is None or self.faults < self.drop_times
        )

    async def _maybe_drop(self, server: SMTP) -> None:
        if not self._due() or not self.take_fault(self.drop_times):
            return
        assert server.transport is not None
        server.transport.close()
        await _forever()  # closing the transport cancels this task: no reply is ever sent


class ClosingHandler(RecordingHandler):
    """Answers MAIL with 421 and closes the connection once ``close_after`` messages have
    been accepted on that connection; a new connection starts counting again. Like Postfix
    it closes at once, reading nothing more; with ``linger`` it closes only once it next
    waits for input, answering whatever was pipelined before that (aiosmtpd's way when a
    hook schedules the close, e.g. ``loop.call_soon(transport.close)``)."""

    close_after = 1
    linger = False

    async def on_mail(self, server: SMTP, session: Session, address: str) -> str | None:
        if getattr(session, "accepted_here", 0) < self.close_after:
            return None
        self.take_fault()
        reply = "421 4.3.2 Service shutting down, closing transmission channel"
        assert server.transport is not None
        if self.linger:
            server.loop.call_soon(server.transport.close)  # runs after the reply is written
            return reply
        await server.push(reply)
        server.transport.close()  # after what was written is flushed; nothing more is read
        await _forever()  # closing the transport cancels this task
        return None


class StallingHandler(RecordingHandler):
    """Receives the message data and never answers it."""

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        self.take_fault()
        self.keep_unacknowledged(self.received(server, envelope))
        await _forever()  # cancelled when the client hangs up or the server stops
        return None


class DataRejectingHandler(RecordingHandler):
    """Takes the whole message, then refuses it with ``reply``."""

    reply = "554 5.7.1 Message rejected as spam"

    async def on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str | None:
        self.take_fault()
        return self.reply


class HidingStarttlsHandler(RecordingHandler):
    """Could do STARTTLS but does not advertise it, as when a middlebox strips it."""

    def ehlo_responses(self, responses: list[str]) -> list[str]:
        return [line for line in responses if "STARTTLS" not in line.upper()]


class HeloOnlyHandler(RecordingHandler):
    """Refuses EHLO, like an old server; HELO works."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.record("EHLO", hostname)
        return ["502 5.5.1 EHLO not implemented"]


class AuthEchoingHandler(RecordingHandler):
    """Refuses every AUTH PLAIN, LOGIN or XOAUTH2 with ``reply`` followed by what the client
    sent, as a careless server's error message may: each line as it came (base64) and
    decoded. ``auth_lines`` keeps the base64 lines, as they went over the wire. With
    ``accept_auth``, AUTH succeeds instead and every RCPT is refused (550) with that echo."""

    reply = "535 5.7.8 Authentication failed"
    accept_auth = False

    def __init__(self) -> None:
        super().__init__()
        self.auth_lines: list[str] = []
        self._echo_text = ""

    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        return f"550 5.1.1 <{address}>: unknown; {self._echo_text}" if self.accept_auth else None

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._echo(server, args, ("",))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._echo(server, args, ("Username:", "Password:"))

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._echo(server, args, ("",))

    async def _echo(self, server: SMTP, args: list[str], challenges: tuple[str, ...]) -> AuthResult:
        """Read the initial response (if any) and one response per challenge left, then
        refuse, quoting them all."""
        self.record("AUTH", args[0])
        decoded = [base64.b64decode(args[1])] if len(args) == 2 else []
        for challenge in challenges[len(decoded) :]:
            answer = await server.challenge_auth(challenge)
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            decoded.append(answer)
        lines = [base64.b64encode(value).decode() for value in decoded]
        with self._lock:
            self.auth_lines.extend(lines)
        plain = [
            value.decode("utf-8", "replace").replace("\x00", " ").replace("\x01", " ")
            for value in decoded
        ]
        echo = f"{' '.join(lines)} ({' | '.join(plain)})"
        if self.accept_auth:
            self._echo_text = f"you said {echo}"
            return AuthResult(success=True, auth_data=USERNAME)
        return AuthResult(success=False, handled=False, message=f"{self.reply} for {echo}")


class ChunkingSMTP(SMTP):
    """aiosmtpd's server with BDAT (RFC 3030): each chunk is read as exactly the bytes its
    command announces, never dot-unstuffed; ``BDAT n LAST`` completes the message, which then
    goes through the handler's DATA hook like a message sent with DATA."""

    @syntax("BDAT size [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        size, last = _bdat_argument(arg)
        if size is None:
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        try:
            chunk = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            assert self.transport is not None
            self.transport.close()  # the client went away mid-chunk: nothing to answer
            return
        record = getattr(self.event_handler, "record", None)
        if record is not None:
            record("BDAT", arg or "")
        await self._bdat_chunk(chunk, last)

    async def _bdat_chunk(self, chunk: bytes, last: bool) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return  # answered already; the chunk is read and dropped
        envelope = self.envelope
        assert envelope is not None
        if not envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if not envelope.rcpt_tos:
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        envelope.original_content = (envelope.original_content or b"") + chunk
        if not last:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        envelope.content = envelope.original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


def _bdat_argument(arg: str | None) -> tuple[int | None, bool]:
    words = (arg or "").split()
    if not 1 <= len(words) <= 2 or not words[0].isdigit():
        return None, False
    if len(words) == 2 and words[1].upper() != "LAST":
        return None, False
    return int(words[0]), len(words) == 2


class _ModeController(Controller):
    """aiosmtpd's Controller making servers that advertise (and speak) the given mode."""

    def __init__(self, handler: RecordingHandler, mode: Mode, **kwargs: Any) -> None:
        self.mode = mode
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        server_class = ChunkingSMTP if self.mode == "chunking" else SMTP
        server = server_class(self.handler, **self.SMTP_kwargs)
        server.advertised = _ADVERTISED[self.mode]  # type: ignore[attr-defined]
        return server


def _quiet_aiosmtpd_logging() -> None:
    # aiosmtpd logs handler errors with log.exception. In Python 3.11.7, formatting a
    # traceback in a server thread while pytest formats a failure in the main thread can
    # corrupt the ast module's recursion counter (CPython gh-106905) and turn the failure
    # report into "INTERNALERROR ... AST constructor recursion depth mismatch". A client
    # sees a handler's error in the reply anyway ("500 Error: ...").
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


@dataclass(frozen=True)
class Certificates:
    """A throw-away CA (from trustme) and a server certificate it signed."""

    ca: trustme.CA
    server_cert: trustme.LeafCert
    ca_file: Path  # the CA certificate in PEM, for SmtpConfig.ca_file

    @classmethod
    def create(
        cls, directory: Path, identities: Iterable[str] = (HOST, "localhost")
    ) -> Certificates:
        ca = trustme.CA()
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca, ca.issue_cert(*identities), ca_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context


class SmtpTestServer:
    """An aiosmtpd server on 127.0.0.1 and a free port, in its own thread.

    ``security`` is what a client should use: "starttls" and "tls" need ``certificates``.
    ``auth_mechanisms`` (e.g. ("PLAIN",)) makes the server require AUTH as alice/s3cret-pw,
    offered over plain connections too so that tests can use ``insecure_auth``. ``mode``:
    what it offers beyond aiosmtpd's own extensions (see the module's docstring).
    ``data_size_limit``: the SIZE it advertises and enforces.
    """

    def __init__(
        self,
        handler: RecordingHandler | None = None,
        *,
        security: Security = "none",
        certificates: Certificates | None = None,
        auth_mechanisms: tuple[str, ...] = (),
        smtputf8: bool = True,
        mode: Mode = DEFAULT_MODE,
        data_size_limit: int | None = None,
    ) -> None:
        if security != "none" and certificates is None:
            raise ValueError(f"security {security!r} needs certificates")
        self.handler = handler if handler is not None else RecordingHandler()
        self.security = security
        self.certificates = certificates
        self.auth_mechanisms = auth_mechanisms
        self.smtputf8 = smtputf8
        self.mode = mode
        # aiosmtpd advertises it in SIZE and refuses larger data (552); None: its own 32 MiB
        self.data_size_limit = data_size_limit
        self.host = HOST
        self.port = 0
        self._controller: Controller | None = None

    @property
    def ca_file(self) -> Path | None:
        return self.certificates.ca_file if self.certificates else None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def commands(self) -> list[str]:
        return self.handler.commands

    def message_ids(self) -> list[str | None]:
        return self.handler.message_ids()

    def start(self) -> SmtpTestServer:
        _quiet_aiosmtpd_logging()
        self.port = self.port or free_port(self.host)  # started again: the same port
        options: dict[str, Any] = {
            "ready_timeout": READY_TIMEOUT,  # a busy machine may take longer than the default
            "server_hostname": "smtp.test",
            "enable_SMTPUTF8": self.smtputf8,
        }
        if self.data_size_limit is not None:
            options["data_size_limit"] = self.data_size_limit
        if self.certificates is not None and self.security == "starttls":
            options["tls_context"] = self.certificates.server_context()
        if self.certificates is not None and self.security == "tls":
            options["ssl_context"] = self.certificates.server_context()
        if self.auth_mechanisms:
            self.handler.require_auth = True  # enforced by the handler: see RecordingHandler
            options["authenticator"] = self.handler.authenticate
            options["auth_require_tls"] = False
            options["auth_exclude_mechanism"] = [
                m for m in AUTH_MECHANISMS if m not in self.auth_mechanisms
            ]
        self._controller = _ModeController(
            self.handler, self.mode, hostname=self.host, port=self.port, **options
        )
        self._controller.start()
        return self

    def stop_listening(self) -> None:
        """Refuse new connections from now on (the connections open go on); callable from
        a handler's hook too."""
        controller = self._controller
        if controller is not None and controller.server is not None:
            controller.loop.call_soon_threadsafe(controller.server.close)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


StartServer = Callable[..., SmtpTestServer]  # the type of the start_smtp_server fixture


def make_smtp_config(server: SmtpTestServer, **overrides: Any) -> SmtpConfig:
    """An SmtpConfig for ``server`` (its security and CA), with short timeouts;
    ``overrides`` replace any field, e.g. ``username="alice", insecure_auth=True``."""
    config = SmtpConfig(
        host=server.host,
        port=server.port,
        security=server.security,
        ca_file=server.ca_file,
        timeout=5.0,
        data_timeout=5.0,
    )
    return dataclasses.replace(config, **overrides)


def make_message(
    row_number: int = 1,
    to: str = "bob@example.com",
    *,
    mail_from: str = "news@example.com",
    rcpt_tos: tuple[str, ...] | None = None,
    body: str = "Hello.\n",
    message_id: str | None = None,
) -> ComposedMessage:
    """A small, real RFC 5322 message (CRLF, policy SMTP) with a stable Message-ID
    (``<row-N@batchmail.test>`` unless given)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message_id = message_id or f"<row-{row_number}@batchmail.test>"
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = f"Message {row_number}"
    message["Message-ID"] = message_id
    message.set_content(body)
    return ComposedMessage(
        row_number=row_number,
        key=to,
        envelope=MessageEnvelope(mail_from, rcpt_tos if rcpt_tos is not None else (to,)),
        message_id=message_id,
        parts=(message.as_bytes(),),
    )
