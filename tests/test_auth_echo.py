"""No form of the password or token leaves batchmail: a server whose AUTH refusal echoes what
the client sent (base64 and decoded) against the real ``batchmail run --verbose``, for AUTH
PLAIN, LOGIN and XOAUTH2; stdout, stderr, every state file and ``status`` are searched for the
secret, each line sent during AUTH, and the secret's base64 at each offset."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
from campaign_files import batchmail, people, write_campaign
from servers import PASSWORD, USERNAME, AuthEchoingHandler, StartServer

TOKEN = "ya29.echoed-token-Qw7Er9"


def smtp_for(server_port: int, mechanism: str, tmp_path: Path) -> dict[str, Any]:
    smtp: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server_port,
        "security": "none",
        "insecure_auth": True,
        "timeout": 5,
        "username": USERNAME,
    }
    if mechanism == "XOAUTH2":
        script = tmp_path / "token.py"  # the token is in the script, not on a command line
        script.write_text(f"print({TOKEN!r})\n", encoding="utf-8")
        smtp["oauth2_token_command"] = f"{sys.executable} {script}"
    else:
        smtp["password_env"] = "ECHO_TEST_PASSWORD"
    return smtp


def secret_forms(secret: str, sent: list[str]) -> list[str]:
    """The secret, each line sent, and the secret's base64 wherever it starts in a stream
    (its middle: the ends share bits with what is around it)."""
    encoded = [base64.b64encode(bytes(offset) + secret.encode()).decode() for offset in range(3)]
    return [secret, *sent, *(text[4:-4] for text in encoded)]


def everything_written(directory: Path) -> bytes:
    if not directory.exists():
        return b""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.mark.parametrize(
    ("mechanism", "reply", "exit_code"),
    [
        ("PLAIN", "535 5.7.8 Authentication failed", 3),
        ("LOGIN", "535 5.7.8 Authentication failed", 3),
        ("XOAUTH2", "535 5.7.8 Authentication failed", 3),
        ("PLAIN", "454 4.7.0 Temporary authentication failure", 3),
    ],
)
def test_an_echoed_auth_exchange_is_never_shown_nor_kept(
    tmp_path: Path, start_smtp_server: StartServer, mechanism: str, reply: str, exit_code: int
) -> None:
    handler = AuthEchoingHandler()
    handler.reply = reply
    server = start_smtp_server(handler, auth_mechanisms=(mechanism,))
    campaign = write_campaign(
        tmp_path / "c", people(2), smtp=smtp_for(server.port, mechanism, tmp_path)
    )

    run = batchmail("run", campaign, "--verbose", env={"ECHO_TEST_PASSWORD": PASSWORD})
    status = batchmail("status", campaign)
    as_json = batchmail("status", campaign, "--json")

    assert run.returncode == exit_code, run.stderr
    assert handler.auth_lines, "the client sent no AUTH data"
    assert f"authentication refused by 127.0.0.1:{server.port}: {reply} for ***" in run.stderr
    assert f"S: {reply} for ***" in run.stderr  # --verbose shows the reply, redacted
    assert server.messages == []
    secret = TOKEN if mechanism == "XOAUTH2" else PASSWORD
    shown = run.stdout + run.stderr + status.stdout + status.stderr + as_json.stdout
    written = everything_written(tmp_path / "c" / ".batchmail")
    for form in secret_forms(secret, handler.auth_lines):
        assert form not in shown, form
        assert form.encode() not in written, form


def test_the_secrets_base64_is_taken_out_at_any_offset_in_a_stream() -> None:
    from batchmail.secret_forms import SecretForms

    forms = SecretForms([PASSWORD])
    for before in (b"", b"x", b"xy", b"\0alice\0", b"\0bob\0"):
        encoded = base64.b64encode(before + PASSWORD.encode() + b"after").decode()
        assert base64.b64encode(PASSWORD.encode())[:8].decode() not in forms.redact(encoded)
        assert "***" in forms.redact(encoded)
    assert forms.redact(f"bad password {PASSWORD}") == "bad password ***"


@pytest.mark.parametrize("mechanism", ["PLAIN", "XOAUTH2"])
def test_replies_after_auth_echoing_it_are_journalled_and_shown_redacted(
    tmp_path: Path, start_smtp_server: StartServer, mechanism: str
) -> None:
    handler = AuthEchoingHandler()
    handler.accept_auth = True  # AUTH passes; every RCPT's 550 quotes it
    server = start_smtp_server(handler, auth_mechanisms=(mechanism,))
    campaign = write_campaign(
        tmp_path / "c", people(2), smtp=smtp_for(server.port, mechanism, tmp_path)
    )

    run = batchmail("run", campaign, "--verbose", env={"ECHO_TEST_PASSWORD": PASSWORD})
    status = batchmail("status", campaign)
    as_json = batchmail("status", campaign, "--json")
    report = tmp_path / "report.csv"
    batchmail("status", campaign, "--csv", report)

    assert run.returncode == 1, run.stderr
    assert "0 sent, 2 failed" in run.stdout
    assert "person1@example.org>: unknown; you said ***" in status.stdout
    assert "S: 550 5.1.1 <person1@example.org>: unknown; you said ***" in run.stderr
    secret = TOKEN if mechanism == "XOAUTH2" else PASSWORD
    shown = run.stdout + run.stderr + status.stdout + as_json.stdout + report.read_text()
    written = everything_written(tmp_path / "c" / ".batchmail")
    for form in secret_forms(secret, handler.auth_lines):
        assert form not in shown, form
        assert form.encode() not in written, form
