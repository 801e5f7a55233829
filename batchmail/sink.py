"""The embedded SMTP server: aiosmtpd on a loopback port, storing every message in a Maildir.

Used by ``smtp: embedded`` (``embedded_sink``, for the length of a run) and by
``batchmail sink`` (``serve``, in the foreground). Each message is stored as the bytes the
client sent, after two trace headers a delivering server adds (``Return-Path`` and one
``Delivered-To`` per envelope recipient), so a Maildir file can be compared byte for byte
with an ``.eml`` from the dry-run.
"""

from __future__ import annotations

import logging
import mailbox
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from batchmail.errors import RunAborted

LOOPBACK = "127.0.0.1"
# aiosmtpd's default is 32 MiB; a campaign with large attachments must not hit it here
# when the real server would take it.
DATA_SIZE_LIMIT = 256 * 1024 * 1024
# How long the server's thread may take to come up. aiosmtpd's default (5 s) ran out on a
# machine busy with other work, and the sink then refused to start. Only a bind that fails
# after our own probe (a port taken in between) waits it out.
READY_TIMEOUT = 60.0
_SERVER_NAME = "batchmail-sink"  # named, so aiosmtpd does not look up our FQDN
_CONTROL = str.maketrans({c: None for c in range(32)})


class MaildirHandler:
    """aiosmtpd handler writing each message, unchanged, into a Maildir.

    aiosmtpd's own ``Mailbox`` handler parses and re-serialises the message: it turns CRLF
    into LF and appends X-Peer/X-MailFrom/X-RcptTo headers, so what it stores is not what
    was sent.
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd reads commands one line at a time, so it serves a pipelining client
        # (RFC 2920) correctly; it just does not say so. Saying so lets batchmail send a
        # message per round trip here too. "250 HELP" stays last: only it has "250 ".
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        try:
            key = self.maildir.add(_trace_headers(envelope) + data)
        except OSError as exc:
            return f"451 4.3.0 cannot store the message: {exc.strerror}"
        return f"250 2.0.0 OK stored as {key}"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (aiosmtpd's Controller cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def embedded_sink(maildir: Path) -> Iterator[tuple[str, int]]:
    """Run a sink on a free loopback port for the length of the ``with``; yields (host, port)."""
    controller = _start(maildir, LOOPBACK, None)
    try:
        yield LOOPBACK, controller.port
    finally:
        controller.stop()


def serve(
    host: str, port: int, maildir: Path, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run a sink in the foreground; returns when interrupted (Ctrl-C)."""
    controller = _start(maildir, host, port or None)
    try:
        if on_ready is not None:
            on_ready(f"listening on {host}:{controller.port}, storing in {maildir}")
        while True:  # the server runs in its thread; this thread waits for Ctrl-C
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


def _start(maildir: Path, host: str, port: int | None) -> Controller:
    _quiet_library_logging()
    try:
        handler = MaildirHandler(maildir)
    except OSError as exc:
        raise RunAborted(f"cannot create the sink's Maildir {maildir}: {exc.strerror}") from exc
    # A free port can be taken between the probe and the bind: try a few.
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port(host)
        if port:
            _check_can_listen(host, chosen)
        controller = Controller(
            handler, hostname=host, port=chosen, ready_timeout=READY_TIMEOUT, **_smtp_options()
        )
        try:
            controller.start()
        except (OSError, TimeoutError, RuntimeError) as exc:
            with suppress(Exception):
                controller.stop(no_assert=True)
            if attempt + 1 == attempts:
                raise RunAborted(f"cannot run the sink on {host}:{chosen}: {exc}") from exc
        else:
            return controller
    raise AssertionError("unreachable")


def _smtp_options() -> dict[str, Any]:
    return {
        "server_hostname": _SERVER_NAME,
        "data_size_limit": DATA_SIZE_LIMIT,
        "decode_data": False,  # keep the bytes; we store them as they came
        "enable_SMTPUTF8": True,
    }


def _check_can_listen(host: str, port: int) -> None:
    # aiosmtpd's Controller only reports a failed bind after its ready timeout (5 s):
    # find out at once, with the OS's reason.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise RunAborted(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _trace_headers(envelope: Envelope) -> bytes:
    """What a delivering server prepends (RFC 5321 4.4): the envelope, which the headers may
    not show (Bcc). CRLF, like the SMTP data lines they precede."""
    lines = [f"Return-Path: <{envelope.mail_from or ''}>"]
    lines += [f"Delivered-To: {address}" for address in envelope.rcpt_tos]
    # surrogateescape: aiosmtpd decodes command arguments that way, so this restores the bytes.
    return b"".join(
        line.translate(_CONTROL).encode("utf-8", "surrogateescape") + b"\r\n" for line in lines
    )


def _quiet_library_logging() -> None:
    # aiosmtpd logs to "mail.log"; without a handler, Python's last-resort handler would
    # print its warnings to stderr. A NullHandler keeps it quiet yet lets records reach the
    # root logger if the command line configures one (e.g. for --verbose).
    logger = logging.getLogger("mail.log")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
