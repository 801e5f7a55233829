"""Pipelined I/O on an open SMTP connection: queued commands and data are written while the
replies are read as they come, neither side ever blocked on the other.

A server answering a long pipelined group while we are still writing it must not wait for us
to read (nor we for it to read, once both sides' buffers are full), and replies that arrived
before the connection broke must still be read: they say which transactions went through.
So the socket is non-blocking while ``Wire.pump`` runs, and both directions are served from
one selector. Plain and TLS sockets alike (smtplib's, after STARTTLS or implicit TLS).
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from batchmail.smtp_dialogue import DebugLog, quickack
from batchmail.smtp_replies import ProtocolError, Reply, ReplyReader

_WRITE_SIZE = 256 * 1024  # per send() call; large enough to fill the socket buffer
_HIGH_WATER = 1024 * 1024  # queued bytes not yet written: more is asked for below this
# Queued pieces smaller than this are copied together (commands, replies' worth of text);
# larger ones (message data, an attachment every message shares) go out from where they are.
_COPY_BELOW = 16 * 1024
_MAX_PIECES = 64  # per sendmsg() call (the system allows 1,024)
_READ_SIZE = 64 * 1024
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class WireLost(Exception):
    """The conversation cannot go on: connection lost, timed out, or replies out of step.
    The text says which, for the user."""


class Wire:
    """Queues what to send, then ``pump`` writes it and hands each reply to a callback.

    What to send can also come from ``source``: each step of that iterator queues more
    (say, one transaction), and it is stepped only while less than a megabyte waits to be
    written, so a window of large messages is never all in memory at once. A step that
    returns True queued nothing: the source waits for replies, and is asked again after the
    next ones are read."""

    def __init__(self, sock: socket.socket, log: DebugLog | None = None) -> None:
        self._sock = sock
        self._log = log
        # What to write, in order: small pieces copied together into a bytearray, large ones
        # as given. ``_offset``: how much of the first was written already.
        self._out: deque[bytes | bytearray] = deque()
        self._out_size = 0  # bytes in _out not yet written
        self._offset = 0
        self._gather = not isinstance(sock, ssl.SSLSocket)  # sendmsg(): a plain socket's
        self._written = 0  # bytes of the stream handed to the kernel
        self._queued = 0  # bytes of the stream queued so far
        self._on_written: deque[tuple[int, Callable[[], None]]] = deque()  # (stream end, call)
        # The length of a send that would have blocked (0: none did): wait until the socket
        # is writable, then repeat it (TLS must repeat a write with the same length).
        self._retry = 0
        self._reader = ReplyReader()
        self._source: Iterator[bool] | None = None
        # Made at the first pump and kept until close: a message with DATA is two or three
        # pumps, and a selector of its own each time cost more than the rest of the I/O.
        self._selector: selectors.BaseSelector | None = None
        self._events = 0  # what the selector waits for now
        self._blocking_timeout: float | None = None  # the socket's timeout before the pumps

    def close(self) -> None:
        """Give the socket back as it was (blocking, its timeout) for smtplib."""
        if self._selector is None:
            return
        selector, self._selector = self._selector, None
        selector.close()
        with contextlib.suppress(OSError):  # already closed: nothing to restore
            self._sock.settimeout(self._blocking_timeout)

    @property
    def queued(self) -> int:
        """Bytes of the stream queued so far: where what is queued next will start."""
        return self._queued

    @property
    def written(self) -> int:
        """Bytes of the stream handed to the kernel so far."""
        return self._written

    @property
    def pending(self) -> bool:
        """Bytes queued and not yet written, or more to come from the source."""
        return bool(self._out) or self._source is not None

    def halt(self) -> None:
        """Write nothing more: drop what is queued and what the source would give."""
        self._out.clear()
        self._out_size = self._offset = self._retry = 0
        self._source = None

    def source(self, steps: Iterator[bool]) -> None:
        self._source = steps
        self._refill()

    def _refill(self) -> None:
        while self._source is not None and self._out_size < _HIGH_WATER:
            waiting = next(self._source, None)
            if waiting is None:
                self._source = None
            elif waiting:
                return

    def command(
        self, line: str, encoding: str = "ascii", on_written: Callable[[], None] | None = None
    ) -> None:
        if self._log is not None:
            self._log.client(line)
        self._queue((line + "\r\n").encode(encoding), on_written)

    def data(
        self,
        parts: Sequence[bytes],
        on_written: Callable[[], None] | None = None,
        end: bytes = b"",
    ) -> None:
        """Message data in wire form (``parts``, joined), then ``end``; the log gets their
        size only. The parts are not copied: they must not change until written."""
        if self._log is not None:
            self._log.data(sum(map(len, parts)) + len(end))
        for part in parts:
            self._queue(part, None)
        self._queue(end, on_written)

    def _queue(self, chunk: bytes, on_written: Callable[[], None] | None) -> None:
        if len(chunk) >= _COPY_BELOW:
            self._out.append(chunk)
        elif chunk:
            last = self._out[-1] if self._out else None
            if isinstance(last, bytearray) and len(last) < _COPY_BELOW:
                last += chunk
            else:
                self._out.append(bytearray(chunk))
        self._out_size += len(chunk)
        self._queued += len(chunk)
        if on_written is not None:
            self._on_written.append((self._queued, on_written))

    def unsolicited(self) -> str | None:
        """What the server sent that nobody asked for (or that it closed the connection),
        found without waiting; None when all is quiet, as it should be between windows."""
        sock = self._sock
        previous = sock.gettimeout()
        sock.setblocking(False)
        try:
            chunk = sock.recv(_READ_SIZE)
        except _WOULD_BLOCK:
            return None
        except OSError as exc:
            return _describe(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
        if not chunk:
            return "the server closed the connection"
        return f"the server sent {chunk[:80]!r} unasked"

    def pump(
        self,
        on_reply: Callable[[Reply], None],
        done: Callable[[], bool],
        timeout: Callable[[], float],
    ) -> None:
        """Write and read until ``done()``. ``timeout()`` is how long the next reply may take
        (any progress, written or read, starts the wait again). Raises ``WireLost``;
        ``on_reply`` may raise ``ProtocolError``, which ends the conversation the same way."""
        if self._selector is None:
            self._blocking_timeout = self._sock.gettimeout()
            self._sock.setblocking(False)
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._sock, selectors.EVENT_READ)
            self._events = selectors.EVENT_READ
        try:
            self._serve(self._selector, on_reply, done, timeout)
        except ProtocolError as exc:
            raise WireLost(f"the server's replies are out of step: {exc}") from exc

    def _serve(
        self,
        selector: selectors.BaseSelector,
        on_reply: Callable[[Reply], None],
        done: Callable[[], bool],
        timeout: Callable[[], float],
    ) -> None:
        sock = self._sock
        last_progress = time.monotonic()
        while not done():
            self._refill()
            if self._out and not self._retry:
                # The socket can almost always take more at once: no need to ask first.
                if self._write(on_reply):
                    last_progress = time.monotonic()
                self._refill()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
            if events != self._events:
                selector.modify(sock, events)
                self._events = events
            left = timeout() - (time.monotonic() - last_progress)
            if left <= 0:
                raise WireLost(f"no reply within {timeout():g}s")
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            ready = [selectors.EVENT_READ] if buffered else [m for _, m in selector.select(left)]
            progress = False
            for mask in ready:
                if mask & selectors.EVENT_WRITE:
                    progress |= self._write(on_reply)
                if mask & selectors.EVENT_READ:
                    progress |= self._read(on_reply)
            if progress:
                last_progress = time.monotonic()
        if self._reader.pending:
            raise WireLost("the server sent more than the replies asked for")

    def _write(self, on_reply: Callable[[Reply], None]) -> bool:
        try:
            written = self._send()
        except _WOULD_BLOCK:
            return False
        except OSError as exc:
            # The server may have answered, then closed (a 421): read what it said first.
            self._read_remaining(on_reply)
            raise WireLost(_describe(exc)) from exc
        self._retry = 0
        self._written += written
        self._out_size -= written
        progress = written > 0
        while written:
            left = len(self._out[0]) - self._offset
            if written < left:
                self._offset += written
                break
            self._out.popleft()
            self._offset = 0
            written -= left
        while self._on_written and self._on_written[0][0] <= self._written:
            self._on_written.popleft()[1]()
        return progress

    def _send(self) -> int:
        """One send from the start of what is queued: bytes written. ``_retry`` says, until
        the caller clears it, that a send was tried. The views into the pieces are released
        at once: a bytearray among them may grow before the next send."""
        if not self._gather:
            # TLS: one piece at a time; a write that would block is repeated with the same
            # length (OpenSSL's rule), which the first piece still has (pieces only grow).
            first = self._out[0]
            self._retry = self._retry or min(len(first) - self._offset, _WRITE_SIZE)
            end = self._offset + self._retry
            with memoryview(first) as view, view[self._offset : end] as chunk:
                return self._sock.send(chunk)
        views: list[memoryview] = []
        size = 0
        try:
            for piece in itertools.islice(self._out, _MAX_PIECES):
                views.append(memoryview(piece)[self._offset :] if not views else memoryview(piece))
                size += len(views[-1])
                if size >= _WRITE_SIZE:
                    break
            self._retry = size
            return self._sock.sendmsg(views)
        finally:
            for view in views:
                view.release()

    def _read(self, on_reply: Callable[[Reply], None]) -> bool:
        """Everything readable now; raises WireLost at the end of the stream."""
        got_any = False
        while True:
            quickack(self._sock)
            try:
                chunk = self._sock.recv(_READ_SIZE)
            except _WOULD_BLOCK:
                return got_any
            except OSError as exc:
                raise WireLost(_describe(exc)) from exc
            if not chunk:
                raise WireLost("the server closed the connection")
            got_any = True
            for reply in self._reader.feed(chunk):
                if self._log is not None:
                    self._log.server(reply.code, reply.lines)
                on_reply(reply)
            if len(chunk) < _READ_SIZE:
                # The socket is very likely empty now: the selector tells when more comes,
                # without a recv (and a setsockopt) failing here each time.
                return True

    def _read_remaining(self, on_reply: Callable[[Reply], None]) -> None:
        with contextlib.suppress(WireLost):
            self._read(on_reply)


def _describe(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__
