"""The raw limit: pre-rendered messages pushed through pipelined SMTP sessions on raw sockets.

``prepare`` renders every message once with batchmail's own library (not timed) into a
corpus: ``corpus.bin`` (the message bytes back to back) and ``index.tsv`` (offset, length,
envelope). ``send`` then does nothing but SMTP, as fast as the protocol allows:

- ``--mode data`` (PIPELINING, RFC 2920): the data of message i goes out in the same write as
  MAIL/RCPT/DATA of message i+1; the client must still wait for each 354, so one round trip
  per message is the floor;
- ``--mode bdat`` (CHUNKING, RFC 3030): MAIL, RCPT and ``BDAT n LAST`` with the data, for up
  to ``--window`` messages in flight; a reader thread collects the replies, so a round trip is
  paid once per window, not per message.

    python bench_raw.py prepare CAMPAIGN CORPUS_DIR
    python bench_raw.py send CORPUS_DIR HOST PORT --mode data|bdat [--window N] [--sessions N]

``--sessions N`` sends the messages through N sessions at once (one a thread), to show
what the server takes from several: the most that batchmail's ``send.sessions`` could give.

``send`` exits 0 when every message was accepted and prints the count.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class Item:
    offset: int
    length: int
    mail_from: str
    rcpt_tos: tuple[str, ...]

    def envelope(self, last_command: bytes) -> bytes:
        lines = [f"MAIL FROM:<{self.mail_from}>".encode()]
        lines += [f"RCPT TO:<{rcpt}>".encode() for rcpt in self.rcpt_tos]
        return b"\r\n".join([*lines, last_command]) + b"\r\n"


def prepare(campaign_path: Path, corpus: Path) -> int:
    from batchmail.campaign import load_campaign
    from batchmail.check import MessageFactory
    from batchmail.recipients import read_recipients

    campaign = load_campaign(campaign_path)
    factory = MessageFactory.prepare(campaign)
    corpus.mkdir(parents=True, exist_ok=True)
    offset = 0
    count = 0
    date = datetime.now(UTC)
    partial = corpus / "index.tsv.partial"  # renamed when complete: a reusable corpus
    with (corpus / "corpus.bin").open("wb") as data, partial.open("w") as index:
        for recipient in read_recipients(campaign.recipients):
            message = factory.build(recipient, date)
            data.write(message.data)
            rcpts = ",".join(message.envelope.rcpt_tos)
            index.write(f"{offset}\t{len(message.data)}\t{message.envelope.mail_from}\t{rcpts}\n")
            offset += len(message.data)
            count += 1
    partial.rename(corpus / "index.tsv")
    return count


def read_index(corpus: Path) -> list[Item]:
    items = []
    for line in (corpus / "index.tsv").read_text().splitlines():
        offset, length, mail_from, rcpts = line.split("\t")
        items.append(Item(int(offset), int(length), mail_from, tuple(rcpts.split(","))))
    return items


class Replies:
    """SMTP replies read off the socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._file: BinaryIO = sock.makefile("rb", buffering=1 << 16)

    def lines(self) -> list[bytes]:
        """Every line of the next reply."""
        lines = []
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def next(self) -> tuple[int, bytes]:
        line = self.lines()[-1]
        return int(line[:3]), line

    def expect(self, code: int) -> None:
        got, line = self.next()
        if got != code:
            raise RuntimeError(f"expected {code}, got {line!r}")


def open_session(host: str, port: int) -> tuple[socket.socket, Replies, set[str]]:
    sock = socket.create_connection((host, port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = Replies(sock)
    replies.expect(220)
    sock.sendall(b"EHLO raw.bench.localhost\r\n")
    keywords = {line[4:].split(b" ")[0].strip().decode().upper() for line in replies.lines()[1:]}
    return sock, replies, keywords


class Corpus:
    """The pre-rendered messages on disk; each read with one pread (from the page cache once
    warm), so that memory holds one message at a time, not the corpus."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def data(self, item: Item) -> bytes:
        return os.pread(self._fd, item.length, item.offset)

    def dot_stuffed(self, item: Item) -> bytes:
        """The DATA payload: a leading dot doubled on any line, then the end-of-data line."""
        data = self.data(item)
        if data.startswith(b".") or b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
            data = b"." + data if data.startswith(b".") else data
        return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


def send_data(sock: socket.socket, replies: Replies, corpus: Corpus, items: list[Item]) -> int:
    """PIPELINING: one round trip per message (the wait for 354)."""
    sock.sendall(items[0].envelope(b"DATA"))
    for i, item in enumerate(items):
        for _ in range(1 + len(item.rcpt_tos)):
            replies.expect(250)
        replies.expect(354)
        sock.sendall(corpus.dot_stuffed(item))
        if i + 1 < len(items):
            sock.sendall(items[i + 1].envelope(b"DATA"))
        replies.expect(250)
    return len(items)


def send_bdat(
    sock: socket.socket, replies: Replies, corpus: Corpus, items: list[Item], window: int
) -> int:
    """CHUNKING: up to ``window`` whole transactions in flight, replies read by this thread
    while another writes (so neither side can block the other on full buffers)."""
    slots = threading.Semaphore(window)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            for item in items:
                slots.acquire()
                if failure:
                    return
                sock.sendall(item.envelope(f"BDAT {item.length} LAST".encode()))
                sock.sendall(corpus.data(item))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for item in items:
            for _ in range(2 + len(item.rcpt_tos)):
                replies.expect(250)
            slots.release()
    finally:
        failure.append(RuntimeError("stopped"))
        slots.release()
        writer.join(10)
    return len(items)


def send(corpus_dir: Path, host: str, port: int, mode: str, window: int, sessions: int = 1) -> int:
    """Every message, in ``sessions`` sessions at once (session i takes every message i
    modulo ``sessions``), each in a thread of its own: socket calls let go of the GIL."""
    items = read_index(corpus_dir)
    with (corpus_dir / "corpus.bin").open("rb") as file:
        corpus = Corpus(file.fileno())
        shares = [items[i::sessions] for i in range(sessions)]
        sent: list[int] = []
        failures: list[BaseException] = []

        def one(share: list[Item]) -> None:
            try:
                sent.append(send_session(host, port, mode, window, corpus, share))
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=one, args=(share,)) for share in shares if share]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
    return sum(sent)


def send_session(
    host: str, port: int, mode: str, window: int, corpus: Corpus, items: list[Item]
) -> int:
    sock, replies, keywords = open_session(host, port)
    wanted = "PIPELINING" if mode == "data" else "CHUNKING"
    if wanted not in keywords:
        raise SystemExit(f"{host}:{port} does not offer {wanted}")
    with sock:
        if mode == "data":
            sent = send_data(sock, replies, corpus, items)
        else:
            sent = send_bdat(sock, replies, corpus, items, window)
        sock.sendall(b"QUIT\r\n")
        replies.expect(221)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare")
    prep.add_argument("campaign", type=Path)
    prep.add_argument("corpus", type=Path)
    push = commands.add_parser("send")
    push.add_argument("corpus", type=Path)
    push.add_argument("host")
    push.add_argument("port", type=int)
    push.add_argument("--mode", choices=["data", "bdat"], required=True)
    push.add_argument("--window", type=int, default=100)
    push.add_argument("--sessions", type=int, default=1)
    args = parser.parse_args()
    if args.command == "prepare":
        print(prepare(args.campaign, args.corpus))
    else:
        print(send(args.corpus, args.host, args.port, args.mode, args.window, args.sessions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
