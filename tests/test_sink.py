"""The embedded sink: a real aiosmtpd server writing a real Maildir."""

from __future__ import annotations

import mailbox
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import make_message

from batchmail.campaign import SmtpConfig
from batchmail.errors import RunAborted
from batchmail.outcomes import Status
from batchmail.sink import DATA_SIZE_LIMIT, READY_TIMEOUT, embedded_sink, free_port, serve
from batchmail.smtp import SmtpSession

DATA = (
    b"From: news@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= tonight\r\n"
    b"Message-ID: <sink-1@batchmail.test>\r\n"
    b"\r\n"
    b"From the start of a line.\r\n"
    b".a line with a leading dot\r\n"
)


def stored(maildir: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((maildir / "new").iterdir())]


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))  # raises if it was taken


def test_embedded_sink_stores_what_was_sent(tmp_path: Path) -> None:
    maildir = tmp_path / "sink"
    with embedded_sink(maildir) as (host, port), smtplib.SMTP(host, port, timeout=60) as client:
        refused = client.sendmail("news@example.com", ["bob@example.com", "eve@example.com"], DATA)

    assert refused == {}
    assert stored(maildir) == [
        b"Return-Path: <news@example.com>\r\n"
        b"Delivered-To: bob@example.com\r\n"
        b"Delivered-To: eve@example.com\r\n" + DATA
    ]
    (message,) = mailbox.Maildir(maildir).values()
    assert message["Subject"] == "=?utf-8?q?Caf=C3=A9?= tonight"
    assert message["Delivered-To"] == "bob@example.com"


def test_an_smtp_session_can_send_to_the_sink(tmp_path: Path) -> None:
    maildir = tmp_path / "sink"
    messages = [make_message(n, f"user{n}@example.com") for n in (1, 2, 3)]
    config = SmtpConfig(host="", port=0, security="none", embedded=True)
    with (
        embedded_sink(maildir) as (host, port),
        SmtpSession(config, host=host, port=port) as session,
    ):
        session.connect()
        outcomes = [session.send(message, lambda: None) for message in messages]

    assert [o.status for o in outcomes] == [Status.SENT] * 3
    files = stored(maildir)
    assert sorted(f.split(b"\r\n", 2)[2] for f in files) == sorted(m.data for m in messages)


def test_sink_takes_large_messages_and_international_mail(tmp_path: Path) -> None:
    with embedded_sink(tmp_path / "sink") as (host, port), smtplib.SMTP(host, port) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == DATA_SIZE_LIMIT > 33 * 1024 * 1024
        assert client.has_extn("8bitmime")
        assert client.has_extn("smtputf8")


def test_sink_stops_when_the_block_ends(tmp_path: Path) -> None:
    with embedded_sink(tmp_path / "sink") as (host, port):
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2).close()


def test_unusable_maildir_aborts(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    sink = embedded_sink(tmp_path / "a-file" / "sink")
    with pytest.raises(RunAborted, match="cannot create the sink's Maildir"):
        sink.__enter__()


def test_serve_on_a_busy_port_aborts_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RunAborted, match=f"cannot listen on 127.0.0.1:{port}"):
            serve("127.0.0.1", port, tmp_path / "sink")
        # At once: not after waiting out the server thread's start (READY_TIMEOUT, 60 s); a
        # bound of half that holds on a machine however busy.
        assert time.monotonic() - started < READY_TIMEOUT / 2


SERVE = """
import sys
from pathlib import Path
from batchmail.sink import serve
serve("127.0.0.1", int(sys.argv[1]), Path(sys.argv[2]), on_ready=lambda s: print(s, flush=True))
print("stopped", flush=True)
"""


def test_serve_runs_until_interrupted(tmp_path: Path) -> None:
    maildir = tmp_path / "sink"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port), str(maildir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready == f"listening on 127.0.0.1:{port}, storing in {maildir}\n"
        # Generous bounds: each waits for an event (a reply, the exit), however busy the machine.
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("news@example.com", ["bob@example.com"], DATA)
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, out, err) == (0, "stopped\n", "")
    assert stored(maildir)[0].endswith(DATA)


def test_embedded_sink_serves_pipelined_batches_exactly(tmp_path: Path) -> None:
    maildir = tmp_path / "sink"
    messages = [make_message(n, f"user{n}@example.com", body=f"Body {n}.\n") for n in range(40)]
    config = SmtpConfig(host="", port=0, security="none", embedded=True)
    with (
        embedded_sink(maildir) as (host, port),
        SmtpSession(config, host=host, port=port, window=16) as session,
    ):
        session.connect()
        assert session.pipelining == "pipelining"
        assert session.window == 16
        outcomes = session.send_batch(messages[:16], lambda going: None)
        outcomes += session.send_batch(messages[16:], lambda going: None)

    assert [o.status for o in outcomes] == [Status.SENT] * 40
    files = stored(maildir)
    assert sorted(f.split(b"\r\n", 2)[2] for f in files) == sorted(m.data for m in messages)
