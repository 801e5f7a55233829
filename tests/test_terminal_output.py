"""What batchmail prints that came from a CSV or a server shows its control characters as
escapes: a key or a reply cannot clear the screen, retitle the terminal or reorder text."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, Session
from campaign_files import batchmail, write_campaign
from servers import RefusingHandler, StartServer

from batchmail.display import shown, shown_json

HOSTILE = "\x1b]0;owned\x07\x1b[2J"  # retitle the terminal, then clear the screen
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


class HostileReplyHandler(RefusingHandler):
    async def on_rcpt(self, server: SMTP, session: Session, address: str) -> str | None:
        if self.marker in address:
            return f"550 5.1.1 gone{HOSTILE}\rrow 9 sent"
        return None


def test_shown_escapes_controls_and_bidi_overrides_and_keeps_line_breaks() -> None:
    text = "a\x1b[2Jb\x07c\x7fd\x9be\u202ef\u2066g\th\r\ni"
    assert shown(text) == "a\\x1b[2Jb\\x07c\\x7fd\\x9be\\u202ef\\u2066g\\x09h\\x0d\ni"
    assert shown("one\ntwo", keep_line_breaks=False) == "one\\x0atwo"
    assert shown("Zoë <zoe@example.org>") == "Zoë <zoe@example.org>"
    assert (
        json.loads(shown_json(json.dumps("x\x9by\u202ez", ensure_ascii=False))) == "x\x9by\u202ez"
    )


def test_a_hostile_key_and_server_reply_are_shown_not_obeyed(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(HostileReplyHandler())
    key = f"k1{HOSTILE}"
    rows = [
        {"id": key, "email": "refuse-me@example.org", "name": "Ann", "code": "1"},
        {"id": "k2", "email": "bob@example.org", "name": "Bob", "code": "2"},
    ]
    campaign = write_campaign(tmp_path, rows, server=server, message={"to": "{{ email }}"})
    campaign.write_text(
        campaign.read_text().replace("file: people.csv", "file: people.csv\n  key: id")
    )

    run = batchmail("run", campaign, "--verbose")
    status = batchmail("status", campaign)
    as_json = batchmail("status", campaign, "--json")

    assert run.returncode == 1, run.stderr
    assert len(server.messages) == 1
    for output in (run.stdout, run.stderr, status.stdout, status.stderr, as_json.stdout):
        assert not any(character in output for character in RAW), repr(output)
    assert "gone\\x1b]0;owned\\x07\\x1b[2J\\x0drow 9 sent" in run.stderr  # the dialogue
    assert "  row 1  k1\\x1b]0;owned\\x07\\x1b[2J  failed: 550 5.1.1 gone\\x1b" in status.stdout
    (failed,) = json.loads(as_json.stdout)["recipients"]
    assert failed["key"] == key and failed["reply"].endswith(f"gone{HOSTILE}\rrow 9 sent")


def _stdout_on_a_terminal(*args: str | Path) -> bytes:
    """Run batchmail with stdout on a pseudo-terminal; return what it wrote there."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    written = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closes when the child exits
            break
        if not chunk:
            break
        written += chunk
    assert process.wait(timeout=60) == 0
    os.close(master)
    return written


def test_preview_shows_a_body_s_control_characters_on_a_terminal_only(tmp_path: Path) -> None:
    rows = [{"email": "ann@example.org", "name": "Ann", "code": f"C1{HOSTILE}"}]
    campaign = write_campaign(tmp_path, rows, smtp="embedded", html=None)

    on_terminal = _stdout_on_a_terminal("preview", campaign)
    piped = batchmail("preview", campaign)

    assert b"your code is C1\\x1b]0;owned\\x07\\x1b[2J." in on_terminal
    assert not any(character.encode() in on_terminal for character in RAW)
    assert f"your code is C1{HOSTILE}.\n" in piped.stdout  # the message's own bytes
