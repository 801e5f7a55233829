"""OAuth2 (AUTH XOAUTH2) end to end: the real ``batchmail`` against an aiosmtpd server that
speaks XOAUTH2 as Gmail does, over STARTTLS with a throw-away CA. The token comes from a
command, is accepted or refused, and never shows in the output or the journal."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult
from campaign_files import batchmail, people, write_campaign
from servers import USERNAME, Certificates, RecordingHandler, SmtpTestServer, StartServer

from batchmail.campaign import SmtpConfig
from batchmail.credentials import resolve_secret, resolve_token

GOOD_TOKEN = "ya29.good-token-Zq8Xw3"
WRONG_TOKEN = "ya29.expired-token-Kp2Lm7"
ERROR_JSON = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}


class XOauth2Handler(RecordingHandler):
    """Accepts AUTH XOAUTH2 for alice with ``token``. A wrong token gets Gmail's answer: a
    334 challenge holding a base64 JSON error, then, once the client has sent its (empty)
    response, 535. ``responses`` keeps what the client answered to that challenge."""

    token = GOOD_TOKEN

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[bytes] = []

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        self.record("AUTH", "XOAUTH2")
        if len(args) == 2:
            given = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            given = answer
        expected = f"user={USERNAME}\x01auth=Bearer {self.token}\x01\x01".encode()
        if given == expected:
            return AuthResult(success=True, auth_data=USERNAME)
        response = await server.challenge_auth(json.dumps(ERROR_JSON))
        self.responses.append(b"*" if response is MISSING else bytes(response))  # type: ignore[arg-type]
        if response is MISSING:
            return AuthResult(success=False, handled=True)  # 501 sent already
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted. Learn more",
        )


@pytest.fixture
def oauth2_server(start_smtp_server: StartServer, certificates: Certificates) -> SmtpTestServer:
    """STARTTLS, then AUTH XOAUTH2 only, required before MAIL."""
    return start_smtp_server(
        XOauth2Handler(),
        security="starttls",
        certificates=certificates,
        auth_mechanisms=("XOAUTH2",),
    )


def token_command(directory: Path, token: str) -> str:
    """A command printing ``token``; the token is in the script, not on the command line."""
    script = directory / "token.py"
    script.write_text(f"print({token!r})\n", encoding="utf-8")
    return f"{sys.executable} {script}"


def oauth2_smtp(server: SmtpTestServer, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "security": server.security,
        "ca_file": str(server.ca_file),
        "timeout": 5,
        "data_timeout": 5,
        "username": USERNAME,
        "oauth2_token_command": command,
        **extra,
    }


def everything_written(directory: Path) -> bytes:
    """Every byte of the campaign's state directory (journal, WAL, lock)."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def secret_forms(token: str) -> list[str]:
    sasl = f"user={USERNAME}\x01auth=Bearer {token}\x01\x01".encode()
    return [token, base64.b64encode(sasl).decode()]


def test_the_token_is_accepted_and_never_shown(
    tmp_path: Path, oauth2_server: SmtpTestServer
) -> None:
    command = token_command(tmp_path, GOOD_TOKEN)
    campaign = write_campaign(tmp_path / "c", people(3), smtp=oauth2_smtp(oauth2_server, command))

    result = batchmail("run", campaign, "--verbose")

    assert result.returncode == 0, result.stderr
    assert "3 sent" in result.stdout
    assert len(oauth2_server.messages) == 3
    assert all(message.tls for message in oauth2_server.messages)
    assert oauth2_server.commands.count("AUTH") == 1  # one session, one AUTH
    assert "C: AUTH XOAUTH2 ***" in result.stderr
    assert "S: 235" in result.stderr
    written = everything_written(tmp_path / "c" / ".batchmail")
    for secret in secret_forms(GOOD_TOKEN):
        assert secret not in result.stdout + result.stderr
        assert secret.encode() not in written


def test_a_wrong_token_stops_the_run_and_is_never_shown(
    tmp_path: Path, oauth2_server: SmtpTestServer
) -> None:
    command = token_command(tmp_path, WRONG_TOKEN)
    campaign = write_campaign(tmp_path / "c", people(3), smtp=oauth2_smtp(oauth2_server, command))

    result = batchmail("run", campaign, "--verbose")

    assert result.returncode == 3, result.stderr
    assert f"authentication refused by {oauth2_server.host}:{oauth2_server.port}" in result.stderr
    assert "535 5.7.8 Username and Password not accepted" in result.stderr
    assert "XOAUTH2 error status 401" in result.stderr
    assert "smtp.oauth2_token_command" in result.stderr
    assert "Traceback" not in result.stderr
    # The client answered the error challenge with an empty line, as XOAUTH2 requires.
    assert oauth2_server.handler.responses == [b""]  # type: ignore[attr-defined]
    assert "S: 334 ***" in result.stderr  # the challenge is not shown either
    assert oauth2_server.messages == [] and "MAIL" not in oauth2_server.commands
    written = everything_written(tmp_path / "c" / ".batchmail")
    for secret in secret_forms(WRONG_TOKEN):
        assert secret not in result.stdout + result.stderr
        assert secret.encode() not in written


def test_a_server_without_xoauth2_is_refused_before_any_token_goes(
    tmp_path: Path, smtp_server_starttls_requiring_auth: SmtpTestServer
) -> None:
    server = smtp_server_starttls_requiring_auth  # AUTH LOGIN PLAIN only
    campaign = write_campaign(
        tmp_path / "c", people(2), smtp=oauth2_smtp(server, token_command(tmp_path, GOOD_TOKEN))
    )

    result = batchmail("run", campaign)

    assert result.returncode == 3
    assert f"{server.host}:{server.port} does not offer AUTH XOAUTH2" in result.stderr
    assert "it offers AUTH LOGIN PLAIN" in result.stderr
    assert "AUTH" not in server.commands and server.messages == []
    assert GOOD_TOKEN not in result.stderr + result.stdout


def test_a_failing_token_command_sends_nothing(
    tmp_path: Path, oauth2_server: SmtpTestServer
) -> None:
    script = tmp_path / "token.py"
    script.write_text(
        f"import sys\nprint({GOOD_TOKEN!r})\nsys.stderr.write('refresh token revoked\\n')\n"
        "sys.exit(3)\n",
        encoding="utf-8",
    )
    smtp = oauth2_smtp(oauth2_server, f"{sys.executable} {script}")
    campaign = write_campaign(tmp_path / "c", people(2), smtp=smtp)

    result = batchmail("run", campaign)

    assert result.returncode == 2
    assert "smtp.oauth2_token_command" in result.stderr
    assert "exited with 3: refresh token revoked" in result.stderr
    assert GOOD_TOKEN not in result.stderr + result.stdout
    assert oauth2_server.commands == []  # never connected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"password_env": "SOME_PASSWORD"},
            "give only one of password_env, password_command and oauth2_token_command",
        ),
        (
            {"password_command": "pass show smtp"},
            "give only one of password_env, password_command and oauth2_token_command",
        ),
        ({"username": None}, "smtp.oauth2_token_command: needs smtp.username"),
        (
            {"security": "none", "port": 2525},
            "smtp.username: refusing to send a password or token over an unencrypted connection",
        ),
    ],
)
def test_campaign_errors(
    tmp_path: Path, oauth2_server: SmtpTestServer, extra: dict[str, Any], expected: str
) -> None:
    smtp = oauth2_smtp(oauth2_server, token_command(tmp_path, GOOD_TOKEN), **extra)
    smtp = {key: value for key, value in smtp.items() if value is not None}
    campaign = write_campaign(tmp_path / "c", people(2), smtp=smtp)

    checked = batchmail("check", campaign)
    run = batchmail("run", campaign)

    assert checked.returncode == 2 and run.returncode == 2
    assert expected in checked.stderr and expected in run.stderr
    assert "Traceback" not in checked.stderr + run.stderr
    assert oauth2_server.commands == []


def test_over_plain_smtp_only_with_insecure_auth(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(XOauth2Handler(), auth_mechanisms=("XOAUTH2",))
    smtp = oauth2_smtp(server, token_command(tmp_path, GOOD_TOKEN), insecure_auth=True)
    del smtp["ca_file"]
    campaign = write_campaign(tmp_path / "c", people(2), smtp=smtp)

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert len(server.messages) == 2


def test_resolve_token_takes_the_first_line_trimmed(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text(f"print('  {GOOD_TOKEN}  ')\nprint('ignored')\n", encoding="utf-8")
    config = SmtpConfig(
        "h", 587, "starttls", username="a@b.c", oauth2_token_command=f"{sys.executable} {script}"
    )
    assert resolve_token(config, "c.yaml") == GOOD_TOKEN
    assert resolve_secret(config, "c.yaml") == GOOD_TOKEN
    empty = tmp_path / "empty.py"
    empty.write_text("print('   ')\n", encoding="utf-8")
    blank = SmtpConfig(
        "h", 587, "starttls", username="a@b.c", oauth2_token_command=f"{sys.executable} {empty}"
    )
    with pytest.raises(Exception, match="printed no access token"):
        resolve_token(blank, "c.yaml")
