"""The debug log of an SMTP dialogue, with every secret taken out; and smtplib's connection
classes wired to it.

Each command sent and each reply line received becomes one line ("C: MAIL FROM:<a@b>",
"S: 250 OK"); message data only its size ("C: <data: 1234 bytes>"). AUTH is redacted: the
mechanism stays, its argument, every continuation line and every 334 challenge become "***",
and every form of the secret is taken out wherever it might still appear (a server echoing
what was sent: see ``secret_forms``). This is why smtplib's own ``set_debuglevel`` is never
used: it prints the AUTH line as sent.

While ``auth_sent`` is set (during AUTH), every line sent is noted in it as a secret form,
whether or not the dialogue is logged: error messages are redacted with the same forms.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from batchmail.secret_forms import REDACTED, SecretForms


class DebugLog:
    """Formats and redacts dialogue lines for a ``debug(line)`` callback."""

    def __init__(self, debug: Callable[[str], None], secrets: SecretForms) -> None:
        self._debug = debug
        self._secrets = secrets
        self._in_auth = False  # between AUTH and the reply that is not a 334 challenge

    def client(self, line: str) -> None:
        text = line.rstrip("\r\n")
        if self._in_auth:
            text = REDACTED  # a response to a challenge: the username or password, encoded
        elif text[:5].upper() == "AUTH ":
            verb, _, rest = text.partition(" ")
            mechanism, _, argument = rest.partition(" ")
            text = f"{verb} {mechanism}" + (f" {REDACTED}" if argument else "")
            self._in_auth = True
        self._emit(f"C: {text}")

    def data(self, size: int) -> None:
        self._emit(f"C: <data: {size} bytes>")

    def server(self, code: int, lines: list[str] | tuple[str, ...]) -> None:
        if self._in_auth and code == 334:
            self._emit(f"S: 334 {REDACTED}")  # challenges can echo what was sent
            return
        self._in_auth = False
        last = len(lines) - 1
        for index, line in enumerate(lines or [""]):
            self._emit(f"S: {code}{'-' if index < last else ' '}{line}")

    def _emit(self, line: str) -> None:
        self._debug(self._secrets.redact(line))


def tune(sock: socket.socket) -> None:
    """Send small writes at once (a pipelined group must not wait for Nagle)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quickack(sock: socket.socket) -> None:
    """Acknowledge what arrives at once (Linux): Postfix writes a reply in two pieces and
    sends the second only once the first is acknowledged, so a delayed ACK costs ~40 ms per
    reply. The kernel drops the flag again by itself, so this is set before each read."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)


class _Logged:
    """What both connection classes add to smtplib: the log, and data sent as data."""

    debug_log: DebugLog | None = None
    auth_sent: SecretForms | None = None
    sock: socket.socket | None

    def send(self, s: Any) -> None:  # str or bytes, as smtplib's
        if self.debug_log is not None or self.auth_sent is not None:
            text = s if isinstance(s, str) else bytes(s).decode("utf-8", "replace")
            for line in text.splitlines():
                if self.auth_sent is not None:
                    self.auth_sent.add_sent(_auth_payload(line))
                if self.debug_log is not None:
                    self.debug_log.client(line)
        super().send(s)  # type: ignore[misc]

    def send_data(self, parts: Sequence[bytes]) -> None:
        """The message data (already in wire form, in parts): logged by size only."""
        if self.debug_log is not None:
            self.debug_log.data(sum(map(len, parts)))
        for part in parts:
            smtplib.SMTP.send(self, part)  # type: ignore[arg-type]

    def getreply(self) -> tuple[int, bytes]:
        if self.sock is not None:
            quickack(self.sock)
        code, message = super().getreply()  # type: ignore[misc]
        if self.debug_log is not None:
            lines = message.decode("utf-8", "replace").split("\n")
            self.debug_log.server(code, lines)
        return code, message


def _auth_payload(line: str) -> str:
    """What a line sent during AUTH carries: an AUTH command's initial response (after the
    mechanism), or the whole line (a response to a challenge)."""
    if line[:5].upper() == "AUTH ":
        return line.split(" ", 2)[2] if line.count(" ") >= 2 else ""
    return line


class LoggedSMTP(_Logged, smtplib.SMTP):
    def __init__(self, host: str, port: int, *, timeout: float, debug_log: DebugLog | None):
        self.debug_log = debug_log  # before connecting: the greeting is logged too
        super().__init__(host, port, timeout=timeout)


class LoggedSMTP_SSL(_Logged, smtplib.SMTP_SSL):  # noqa: N801 - smtplib's naming
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        context: ssl.SSLContext | None,
        debug_log: DebugLog | None,
    ):
        self.debug_log = debug_log
        super().__init__(host, port, timeout=timeout, context=context)
